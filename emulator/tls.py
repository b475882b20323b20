"""The emulator's TLS: the public URL clients use, and a server certificate that names it.

The CA (``ca.pem``, its key in ``ca-key.pem``) is made once and kept, so a ``ca.pem``
already handed to workers stays valid; the server certificate is re-issued by that CA
whenever it lacks the public URL's host (``--public-url https://emulator:8443``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_FILE = "server.pem"
CERT_KEY_FILE = "server-key.pem"

LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def _host_name(host: str) -> str:
    """``host`` as a certificate name: an IP address or an ASCII DNS name, lower case."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.lower().rstrip(".").split(".")
        if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise ValueError(f"{host!r} is not a host name (letters, digits, '-', '.')") from None
        return ".".join(labels)
    if address.is_unspecified:
        raise ValueError(f"{host} is a listen address, not one clients can reach")
    return str(address)


def _url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme.lower() != "https":
        return "the scheme must be https"
    if parts.username is not None or parts.password is not None:
        return "no user info"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "no path, query or fragment"
    if not parts.hostname:
        return "no host"
    try:
        port = parts.port
    except ValueError:
        return "bad port"
    if port == 0:
        return "bad port"
    try:
        _host_name(parts.hostname)
    except ValueError as exc:
        return str(exc)
    return None


def _without_user_info(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def public_url(url: str) -> str:
    """Check ``url`` is ``https://HOST[:PORT]`` and return it normalized (no trailing /).

    Raises ``ValueError`` with a one-line message that names what is wrong.
    """
    problem = _url_problem(url)
    if problem is not None:
        shown = _without_user_info(url)
        raise ValueError(f"public URL must be https://HOST[:PORT], got {shown!r}: {problem}")
    parts = urlsplit(url)
    host = _host_name(parts.hostname or "")
    netloc = f"[{host}]" if ":" in host else host
    return f"https://{netloc}" if parts.port is None else f"https://{netloc}:{parts.port}"


def url_host(url: str) -> str:
    """The certificate name for a URL already checked by :func:`public_url`."""
    return _host_name(urlsplit(url).hostname or "")


def cert_names(cert_file: Path) -> set[str]:
    """DNS names and IP addresses (as text) in the first certificate of ``cert_file``."""
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    names = {name.lower() for name in san.get_values_for_type(x509.DNSName)}
    return names | {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def pkcs8(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_or_make_ca(directory: Path) -> trustme.CA:
    ca_file, ca_key_file = directory / CA_FILE, directory / CA_KEY_FILE
    if ca_file.is_file() and ca_key_file.is_file():
        return trustme.CA.from_pem(ca_file.read_bytes(), ca_key_file.read_bytes())
    # No CA key kept (a directory from before keys were kept): a new CA, once.
    ca = trustme.CA(organization_name="notifier emulator")
    write_private(ca_key_file, ca.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(ca_file))
    return ca


def ensure_tls(directory: Path, host: str) -> None:
    """Make sure ``server.pem`` is signed by the kept CA and names ``host`` (and loopback).

    An existing certificate that already names ``host`` is left alone; otherwise a new one
    is issued for every name it had plus ``host``.
    """
    cert_file, key_file = directory / CERT_FILE, directory / CERT_KEY_FILE
    names = list(LOCAL_NAMES)
    if cert_file.is_file() and key_file.is_file() and (directory / CA_FILE).is_file():
        present = cert_names(cert_file)
        if host in present:
            return
        names += sorted(present - set(names))
    ca = _load_or_make_ca(directory)
    cert = ca.issue_cert(*names, *([host] if host not in names else []))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    write_private(key_file, pkcs8(key))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
