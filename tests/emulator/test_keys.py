"""The emulator's credentials for other machines: ``--public-url``, ``--env-dir``, the
certificate's names under a stable CA, one-line errors, and a port that is already taken.

TLS checks are real OpenSSL handshakes (in memory, or against a served emulator) that
trust only ``ca.pem`` and verify the public host name, as the workers do.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from emulator import main as emulator_main
from emulator.keys import ensure_keys
from emulator.server import check_port_free, default_public_url
from emulator.testing import free_port
from tests.deploy.helpers import load_compose
from tests.support import wait_for

PUBLIC = "https://emulator:8443"
MOUNT = "/var/lib/notifier/emulator"


def _env(directory: Path) -> dict[str, str]:
    lines = (directory / "notifier.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def _sans(directory: Path) -> tuple[set[str], set[str]]:
    """DNS names and IP addresses of the served certificate, read with cryptography."""
    cert = x509.load_pem_x509_certificate((directory / "server.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return set(san.get_values_for_type(x509.DNSName)), ips


def _handshake(directory: Path, server_hostname: str) -> None:
    """A TLS handshake in memory: the server's cert, a client trusting ca.pem only."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(directory / "server.pem", directory / "server-key.pem")
    client_ctx = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("notifier emulator: "), err
    return err


def test_env_file_and_token_uri_carry_the_public_url_and_mount_path(tmp_path, capsys) -> None:
    keys = tmp_path / "keys"
    argv = ["keys", "--dir", str(keys), "--public-url", f"{PUBLIC}/", "--env-dir", MOUNT]
    assert emulator_main(argv) == 0
    env = _env(keys)
    assert env["NOTIFIER_FCM_ENDPOINT"] == env["NOTIFIER_APNS_ENDPOINT"] == PUBLIC
    assert env["NOTIFIER_FCM_CREDENTIALS"] == f"{MOUNT}/fcm-service-account.json"
    assert env["NOTIFIER_APNS_KEY_FILE"] == f"{MOUNT}/apns-key.p8"
    assert env["NOTIFIER_PROVIDER_CA_FILE"] == f"{MOUNT}/ca.pem"
    account = json.loads((keys / "fcm-service-account.json").read_text())
    assert account["token_uri"] == f"{PUBLIC}/token"
    # without --env-dir the paths are the directory itself, as before
    assert emulator_main(["keys", "--dir", str(keys), "--public-url", PUBLIC]) == 0
    assert _env(keys)["NOTIFIER_APNS_KEY_FILE"] == str((keys / "apns-key.p8").resolve())


def test_cert_names_the_public_host_and_keeps_the_ca(tmp_path) -> None:
    ensure_keys(tmp_path, "https://127.0.0.1:8443")
    ca_pem = (tmp_path / "ca.pem").read_bytes()
    assert "emulator" not in _sans(tmp_path)[0]

    ensure_keys(tmp_path, PUBLIC)
    names, ips = _sans(tmp_path)
    assert {"emulator", "localhost"} <= names and "127.0.0.1" in ips
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem  # a ca.pem handed out stays valid
    _handshake(tmp_path, "emulator")
    _handshake(tmp_path, "localhost")

    served = (tmp_path / "server.pem").read_bytes()
    ensure_keys(tmp_path, PUBLIC)
    assert (tmp_path / "server.pem").read_bytes() == served  # no new cert when not needed

    ensure_keys(tmp_path, "https://10.20.30.40:9443")
    names, ips = _sans(tmp_path)
    assert "emulator" in names and "10.20.30.40" in ips  # names accumulate
    assert (tmp_path / "ca.pem").read_bytes() == ca_pem
    _handshake(tmp_path, "10.20.30.40")


def test_a_directory_without_a_ca_key_gets_a_matching_new_ca(tmp_path) -> None:
    ensure_keys(tmp_path, "https://127.0.0.1:8443")
    (tmp_path / "ca-key.pem").unlink()  # as written before the CA key was kept
    ensure_keys(tmp_path, PUBLIC)
    _handshake(tmp_path, "emulator")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://emulator:8443", "https"),
        ("https://:8443", "no host"),
        ("https://emulator:99999", "bad port"),
        ("https://emulator:0", "bad port"),
        ("https://emulator:8443/v1", "no path"),
        ("https://user:secret@emulator:8443", "no user info"),
        ("https://my_emulator:8443", "not a host name"),
        ("https://0.0.0.0:8443", "listen address"),
        ("emulator:8443", "https"),
    ],
)
def test_a_bad_public_url_fails_with_one_line(tmp_path, capsys, url, problem) -> None:
    keys = tmp_path / "keys"
    assert emulator_main(["keys", "--dir", str(keys), "--public-url", url]) == 2
    err = _one_line_error(capsys)
    assert "public URL must be https://HOST[:PORT]" in err and problem in err
    assert "secret" not in err  # user info is never echoed
    assert not keys.exists()


def test_serve_rejects_a_bad_url_and_a_relative_env_dir_before_anything(
    tmp_path, capsys, busy_port
) -> None:
    # the port is taken too: were the checks skipped, serve would still not start
    base = ["serve", "--keys", str(tmp_path / "k"), "--port", str(busy_port)]
    assert emulator_main([*base, "--public-url", "https://emulator:8443?x=1"]) == 2
    assert "no path, query or fragment" in _one_line_error(capsys)
    assert emulator_main([*base, "--env-dir", "rel/dir"]) == 2
    assert "--env-dir must be an absolute path" in _one_line_error(capsys)
    assert emulator_main(["keys", "--dir", str(tmp_path / "k"), "--env-dir", "rel/dir"]) == 2
    assert "--env-dir must be an absolute path" in _one_line_error(capsys)
    assert not (tmp_path / "k").exists()


def test_default_public_url_is_the_listen_address_or_loopback() -> None:
    assert default_public_url("0.0.0.0", 8443) == "https://127.0.0.1:8443"
    assert default_public_url("::", 9000) == "https://127.0.0.1:9000"
    assert default_public_url("127.0.0.1", 8443) == "https://127.0.0.1:8443"
    assert default_public_url("::1", 8443) == "https://[::1]:8443"


def test_compose_emulator_advertises_its_service_name() -> None:
    services = load_compose()["services"]
    command = services["emulator"]["command"]
    url = command[command.index("--public-url") + 1]
    port = services["emulator"]["environment"]["HEALTHCHECK_PORT"]
    assert url == f"https://emulator:{port}"


# the port -------------------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port held by a listener that allows SO_REUSEPORT, as granian itself does."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.mark.parametrize("option", [socket.SO_REUSEPORT, socket.SO_REUSEADDR, None])
def test_a_taken_port_is_detected_whatever_the_holder_allows(option) -> None:
    with socket.socket() as listener:
        if option is not None:
            listener.setsockopt(socket.SOL_SOCKET, option, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again once the holder closed


def test_serve_fails_fast_when_the_port_is_taken(tmp_path, busy_port) -> None:
    command = [sys.executable, "-m", "emulator", "serve", "--keys", str(tmp_path)]
    done = subprocess.run(
        [*command, "--port", str(busy_port)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr == f"notifier emulator: port {busy_port} on 127.0.0.1 is already in use\n"
    assert not (tmp_path / "notifier.env").exists()  # failed before writing anything


async def test_served_cert_verifies_for_the_public_host(tmp_path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "emulator", "--keys", str(tmp_path), "--port", str(port)],
        *["--public-url", f"https://emulator.test:{port}"],
        stdout=asyncio.subprocess.DEVNULL,
    )

    async def verified() -> bool:
        # dial 127.0.0.1 but check the certificate for emulator.test, as a worker would;
        # a certificate that does not name it fails the test at once
        assert process.returncode is None, "emulator exited"
        if not (tmp_path / "server.pem").is_file():
            return False
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="emulator.test"
            )
        except ConnectionRefusedError:
            return False
        writer.close()
        return True

    try:
        await wait_for(verified, timeout=20, what="a verified TLS handshake")
        assert _env(tmp_path)["NOTIFIER_FCM_ENDPOINT"] == f"https://emulator.test:{port}"
        _handshake(tmp_path, "127.0.0.1")  # loopback stays named too
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
