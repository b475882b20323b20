"""Several FCM projects and APNs teams in one emulator, each with its faults and counts.

Google and Apple check a credential against the account it belongs to; so does the
emulator. An FCM *service account* (one ``private_key_id``) belongs to one project: the
token endpoint picks it by the assertion's ``kid`` and the access token it mints is bound
to it, so a send to another project's URL is 403 PERMISSION_DENIED. An APNs *key* (team
id + key id) is picked by the provider JWT's ``kid`` and verified against its team.

Faults are per credential, not per device token:

- ``revoked``: FCM: the token endpoint answers ``invalid_grant`` for every service account
  of the project registered so far, and tokens they got are 401 UNAUTHENTICATED; APNs:
  403 InvalidProviderToken. A *replaced* credential (a new service account for the same
  project, a new key id for the team) is not revoked, so it heals the app.
- ``token_refused`` (FCM only): the token endpoint refuses the project's assertions with
  the given OAuth2 error and status; tokens already minted keep working.
- ``rate_limited`` / ``error``: every push under the credential (or the next ``count``)
  answers 429 with Retry-After, or the given status and reason.

Counts (accepted, rejected, token requests) are per FCM project and per APNs
``TEAM/KEY``; they are what proves each push arrived under its own app's credential.

Credentials added through the control API are remembered (public halves only) in
``credentials.jsonl`` of the keys directory, so a restarted emulator still accepts the
ones workers hold; faults and counts are not kept.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from emulator.auth import AssertionVerifier, ProviderTokenVerifier
from emulator.state import Fault

PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{0,62}")
APPLE_ID = re.compile(r"[A-Za-z0-9]{1,32}")  # team and key ids: 10 upper-case chars at Apple
CREDENTIALS_FILE = "credentials.jsonl"  # in the keys directory
_CACHE_LIMIT = 10_000
# A connection's binding to its first key lapses after this long unused: the emulator
# cannot see connections close, and a later connection may reuse the client's address.
CONNECTION_BINDING_IDLE = 10.0


@dataclass(slots=True)
class CredentialFault:
    """A fault for every push under one credential; ``remaining`` None = until cleared."""

    fault: Fault
    remaining: int | None = None


@dataclass(slots=True)
class Counts:
    accepted: int = 0
    rejected: int = 0
    token_requests: int = 0

    def to_dict(self, with_tokens: bool) -> dict[str, int]:
        counts = {"accepted": self.accepted, "rejected": self.rejected}
        if with_tokens:
            counts["token_requests"] = self.token_requests
        return counts


@dataclass(slots=True)
class Faulted:
    """What a credential shares with the others: a fault, a revocation, counts."""

    fault: CredentialFault | None = None
    counts: Counts = field(default_factory=Counts)

    def take_fault(self) -> Fault | None:
        held = self.fault
        if held is None:
            return None
        if held.remaining is not None:
            held.remaining -= 1
            if held.remaining <= 0:
                self.fault = None
        return held.fault


@dataclass(slots=True)
class FcmProject(Faulted):
    project_id: str = ""
    token_refusal: tuple[int, str] | None = None  # (HTTP status, OAuth2 error)


@dataclass(slots=True)
class FcmAccount:
    """One service-account key of a project."""

    project: FcmProject
    client_email: str
    key_id: str
    verifier: AssertionVerifier
    revoked: bool = False


@dataclass(slots=True)
class ApnsKey(Faulted):
    team_id: str = ""
    key_id: str = ""
    topics: frozenset[str] = frozenset()
    verifier: ProviderTokenVerifier | None = None
    revoked: bool = False

    @property
    def name(self) -> str:
        return f"{self.team_id}/{self.key_id}"


def _public_pem(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


class CredentialRegistry:
    """Every service account and APNs key the emulator knows; the first ones are defaults."""

    def __init__(self, token_uri: str, saved: Path | None = None) -> None:
        self.token_uri = token_uri
        self._saved = saved  # where added credentials are remembered (JSON lines)
        self.projects: dict[str, FcmProject] = {}
        self.accounts: dict[str, FcmAccount] = {}  # by private_key_id
        self.apns_keys: dict[str, ApnsKey] = {}  # by key id (unique at Apple)
        self._default_account: FcmAccount | None = None
        self._jwt_keys: dict[str, ApnsKey | None] = {}  # provider JWT -> its key
        self._connections: dict[str, tuple[str, float]] = {}  # client -> (key id, last use)

    # registering -----------------------------------------------------------------------

    def add_fcm_account(
        self, project_id: str, client_email: str, key_id: str, public_key: rsa.RSAPublicKey
    ) -> FcmAccount:
        project = self.projects.get(project_id)
        if project is None:
            project = self.projects[project_id] = FcmProject(project_id=project_id)
        verifier = AssertionVerifier(public_key, client_email, key_id, self.token_uri)
        account = FcmAccount(project, client_email, key_id, verifier)
        self.accounts[key_id] = account
        if self._default_account is None:
            self._default_account = account
        return account

    def add_apns_key(
        self, team_id: str, key_id: str, public_key: ec.EllipticCurvePublicKey, topics: set[str]
    ) -> ApnsKey:
        if key_id in self.apns_keys:
            raise ValueError(f"APNs key id {key_id} is already registered")
        key = ApnsKey(
            team_id=team_id,
            key_id=key_id,
            topics=frozenset(topics),
            verifier=ProviderTokenVerifier(public_key, key_id, team_id),
        )
        self.apns_keys[key_id] = key
        return key

    # remembering ------------------------------------------------------------------------

    def save(
        self, entry: dict[str, Any], public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    ) -> None:
        """Remember a credential added at run time (its public key only)."""
        if self._saved is not None:
            with self._saved.open("a") as f:
                f.write(json.dumps({**entry, "public_key": _public_pem(public_key)}) + "\n")

    def load(self) -> int:
        """Register every credential remembered by an earlier run; returns how many."""
        if self._saved is None or not self._saved.is_file():
            return 0
        lines = self._saved.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            try:
                self._load_one(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{self._saved}: line {number} is not a credential") from exc
        return len(lines)

    def _load_one(self, entry: dict[str, Any]) -> None:
        public_key = serialization.load_pem_public_key(entry["public_key"].encode())
        if entry["provider"] == "fcm" and isinstance(public_key, rsa.RSAPublicKey):
            email, key_id = entry["client_email"], entry["key_id"]
            self.add_fcm_account(entry["project_id"], email, key_id, public_key)
        elif entry["provider"] == "apns" and isinstance(public_key, ec.EllipticCurvePublicKey):
            topics = set(entry["topics"])
            self.add_apns_key(entry["team_id"], entry["key_id"], public_key, topics)
        else:
            raise ValueError("unknown provider or key type")

    # lookups -----------------------------------------------------------------------------

    def account_for_assertion(self, assertion: str) -> FcmAccount | None:
        """The service account an assertion names by ``kid`` (else the default one, whose
        verifier then gives Google's refusal for the mismatch)."""
        try:
            kid = jwt.get_unverified_header(assertion).get("kid")
        except jwt.PyJWTError:
            kid = None
        found = self.accounts.get(kid) if isinstance(kid, str) else None
        return found or self._default_account

    def apns_key_for(self, authorization: str | None) -> ApnsKey | None:
        """The registered key a provider JWT names by ``kid``, or None."""
        if not authorization:
            return None
        token = authorization.partition(" ")[2]
        if token in self._jwt_keys:
            return self._jwt_keys[token]
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            kid = None
        key = self.apns_keys.get(kid) if isinstance(kid, str) else None
        if len(self._jwt_keys) >= _CACHE_LIMIT:
            self._jwt_keys.clear()
        self._jwt_keys[token] = key
        return key

    def bind_connection(self, client: str, key: ApnsKey, now: float) -> bool:
        """APNs binds a connection to the key of its first push: False for another key
        (403 UnrelatedKeyIdInToken), so one connection can't mix teams or keys."""
        bound = self._connections.get(client)
        if (
            bound is not None
            and bound[0] != key.key_id
            and now - bound[1] < CONNECTION_BINDING_IDLE
        ):
            return False
        if len(self._connections) >= _CACHE_LIMIT:
            self._connections.clear()  # forgetting a binding only makes the check lenient
        self._connections[client] = (key.key_id, now)
        return True

    def topic_owned_elsewhere(self, topic: str) -> bool:
        """Whether some registered key may push to ``topic`` (another team's app)."""
        return any(topic in key.topics for key in self.apns_keys.values())

    # faults ------------------------------------------------------------------------------

    def revoke_fcm(self, project_id: str, key_id: str | None = None) -> int:
        """Revoke the project's service accounts (or one); returns how many."""
        hit = [
            a
            for a in self.accounts.values()
            if a.project.project_id == project_id and key_id in (None, a.key_id)
        ]
        for account in hit:
            account.revoked = True
        return len(hit)

    def heal_fcm(self, project_id: str) -> None:
        project = self.projects[project_id]
        project.fault = None
        project.token_refusal = None
        for account in self.accounts.values():
            if account.project is project:
                account.revoked = False

    def heal_apns(self, key: ApnsKey) -> None:
        key.fault = None
        key.revoked = False

    def reset(self) -> None:
        """Clear every credential fault and count; registered credentials stay."""
        for project in self.projects.values():
            self.heal_fcm(project.project_id)
            project.counts = Counts()
        for key in self.apns_keys.values():
            self.heal_apns(key)
            key.counts = Counts()

    # reporting ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """``{"fcm": {project: counts}, "apns": {"TEAM/KEY": counts}}``."""
        return {
            "fcm": {p.project_id: p.counts.to_dict(True) for p in self.projects.values()},
            "apns": {k.name: k.counts.to_dict(False) for k in self.apns_keys.values()},
        }

    def describe(self) -> dict[str, Any]:
        """Every credential with its state, without key material."""
        fcm = [
            {
                "project_id": a.project.project_id,
                "client_email": a.client_email,
                "private_key_id": a.key_id,
                "revoked": a.revoked,
                "token_refused": a.project.token_refusal is not None,
                "fault": _fault_name(a.project.fault),
            }
            for a in self.accounts.values()
        ]
        apns = [
            {
                "team_id": k.team_id,
                "key_id": k.key_id,
                "topics": sorted(k.topics),
                "revoked": k.revoked,
                "fault": _fault_name(k.fault),
            }
            for k in self.apns_keys.values()
        ]
        return {"fcm": fcm, "apns": apns}


def _fault_name(held: CredentialFault | None) -> str | None:
    return None if held is None else str(held.fault.kind)
