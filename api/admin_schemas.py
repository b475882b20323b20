"""The admin API's request bodies and answers (``/v1/admin/apps/{app}/credentials/...``).

Request models validate the shape (the OpenAPI document renders them); whether a key
loads is :mod:`notifier.credentials.model`'s to say, and its refusal names the field.
Answers are TypedDicts like ``api/responses.py``'s: never a private key.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from api.responses import DateTime
from api.schemas import NO_NUL_PATTERN
from notifier.credentials.model import (
    APPLE_ID_PATTERN,
    MAX_MATERIAL_BYTES,
    MAX_TOPICS,
    TOPIC_PATTERN,
)

# An app name in a path: notifier.credentials.vault.APP_NAME_PATTERN (1..200 characters, no
# control character) less "/", which cannot be one path segment.
APP_PATH_PATTERN = r"^[^\x00-\x1f\x7f-\x9f/]{1,200}$"
_NON_EMPTY = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00]*\S[^\x00]*$")]
_EXTRA = Annotated[str, Field(max_length=MAX_MATERIAL_BYTES, pattern=NO_NUL_PATTERN)]
_EXACT = ConfigDict(extra="forbid")


class ServiceAccount(BaseModel):
    """A Google service-account JSON as Firebase hands it out (its other fields are kept)."""

    model_config = ConfigDict(
        strict=True,
        extra="allow",
        frozen=True,
        json_schema_extra={"propertyNames": {"pattern": NO_NUL_PATTERN}},
    )
    # Its other fields (type, private_key_id, client_id, auth_uri, universe_domain, ...) are
    # strings in every file Google hands out; typed so, the schema says what the API
    # refuses (a NUL anywhere in a body is a 422: api/body.py).
    __pydantic_extra__: dict[str, _EXTRA]

    project_id: _NON_EMPTY
    client_email: _NON_EMPTY
    private_key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_MATERIAL_BYTES,
            description="An RSA private key in PEM (else 422 at /service_account/private_key)",
        ),
    ]
    token_uri: Annotated[str, Field(pattern=r"^https?://[^\x00]+$", max_length=4096)]


class FcmCredentialRequest(BaseModel):
    """``PUT /v1/admin/apps/{app}/credentials/fcm``: the app's FCM service account."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    service_account: ServiceAccount


class ApnsCredentialRequest(BaseModel):
    """``PUT /v1/admin/apps/{app}/credentials/apns``: the app's APNs token-signing key."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    private_key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_MATERIAL_BYTES,
            description="The .p8 file's text: an EC P-256 private key in PEM "
            "(else 422 at /private_key)",
        ),
    ]
    key_id: Annotated[str, Field(pattern=APPLE_ID_PATTERN)]
    team_id: Annotated[str, Field(pattern=APPLE_ID_PATTERN)]
    topics: Annotated[
        list[Annotated[str, Field(pattern=TOPIC_PATTERN)]],
        Field(min_length=1, max_length=MAX_TOPICS),
    ]


@with_config(_EXACT)
class FcmCredentialInfo(TypedDict):
    """An app's FCM credential as the admin API shows it: no private key."""

    app: str
    provider: Literal["fcm"]
    version: int
    updated_at: DateTime
    secrets_key_id: str
    fingerprint: str
    project_id: str
    client_email: str
    private_key_id: NotRequired[str]


@with_config(_EXACT)
class ApnsCredentialInfo(TypedDict):
    """An app's APNs credential as the admin API shows it: no private key."""

    app: str
    provider: Literal["apns"]
    version: int
    updated_at: DateTime
    secrets_key_id: str
    fingerprint: str
    key_id: str
    team_id: str
    topics: list[str]


ADMIN_SHAPES = {"FcmCredentialInfo": FcmCredentialInfo, "ApnsCredentialInfo": ApnsCredentialInfo}
ADMIN_REQUESTS = (FcmCredentialRequest, ApnsCredentialRequest)
