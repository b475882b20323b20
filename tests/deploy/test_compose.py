"""docker-compose.scale.yml holds together without Docker: every file, volume, network and
env file it names exists, start-up order waits on real health checks, the worker scales,
and the broker topology it loads is exactly the one the code declares."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from notifier import broker
from notifier.cli import _parser as cli_parser
from notifier.credentials.sealing import new_key
from notifier.models import Lane
from notifier.settings import Settings, load_settings

from .helpers import COMPOSE_FILE, DOCKER_PROMETHEUS, ROOT, load_compose

EXPECTED_SERVICES = {
    "mongodb",
    "rabbitmq",
    "api-1",
    "api-2",
    "nginx",
    "worker",
    "worker-transactional",
    "worker-bulk",
    "prometheus",
    "grafana",
    "emulator",
}
_DEFAULTED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}")
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|PRIVATE|CREDENTIAL", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _interpolate(value: str) -> str:
    """``${VAR:-default}`` -> default, as compose does with VAR unset."""
    return _DEFAULTED.sub(lambda m: m.group(1), value)


def _volume_parts(volume: str | dict[str, Any]) -> tuple[str, str]:
    if isinstance(volume, dict):
        return str(volume["source"]), str(volume["target"])
    source, target = _interpolate(volume).split(":")[:2]
    return source, target


def _env_files(service: dict[str, Any]) -> list[dict[str, Any]]:
    files = service.get("env_file", [])
    files = [files] if isinstance(files, str) else files
    return [{"path": f, "required": True} if isinstance(f, str) else f for f in files]


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    return env


def test_compose_file_parses_with_every_service(services: dict[str, Any]) -> None:
    assert set(services) >= EXPECTED_SERVICES


def test_every_mounted_file_and_named_volume_exists(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, _ = _volume_parts(volume)
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"


def test_every_network_is_declared(compose: dict[str, Any], services: dict[str, Any]) -> None:
    declared = set(compose.get("networks") or {})
    for name, service in services.items():
        for network in service.get("networks", []):
            assert network in declared, f"{name} joins undeclared network {network}"


def test_env_files_exist_and_optional_ones_have_an_example(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for env_file in _env_files(service):
            path = ROOT / env_file["path"]
            if env_file.get("required", True):
                assert path.is_file(), f"{name}: env file {path} missing"
            else:
                example = path.with_name(path.name + ".example")
                assert example.is_file(), f"{name}: optional {path} has no {example.name}"


def test_build_context_is_the_repo_dockerfile(services: dict[str, Any]) -> None:
    for name in ("api-1", "api-2", "worker", "emulator"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()


def test_worker_scales_no_fixed_name_no_host_port(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    args = cli_parser().parse_args(worker["command"])
    assert (args.command, args.host, args.metrics_port) == ("worker", "0.0.0.0", 9100)


def test_lane_workers_are_the_worker_consuming_one_lane_each(
    services: dict[str, Any],
) -> None:
    """``--profile lanes`` adds one worker service per lane, each scalable on its own."""
    worker = services["worker"]
    env = _read_env_file(ROOT / "deploy" / "notifier.env.example")
    assert "NOTIFIER_LANES" not in worker["environment"] and "NOTIFIER_LANES" not in env
    assert load_settings(env).lanes == (Lane.TRANSACTIONAL, Lane.BULK)
    for name, lane in (("worker-transactional", Lane.TRANSACTIONAL), ("worker-bulk", Lane.BULK)):
        service = services[name]
        assert service["profiles"] == ["lanes"], name
        assert "container_name" not in service and "ports" not in service, name
        for key in ("image", "entrypoint", "command", "volumes", "depends_on", "env_file"):
            assert service[key] == worker[key], (name, key)
        environment = dict(service["environment"])
        assert environment.pop("NOTIFIER_LANES") == lane.value, name
        assert environment == worker["environment"], name
        lanes = load_settings({**env, "NOTIFIER_LANES": service["environment"]["NOTIFIER_LANES"]})
        assert lanes.lanes == (lane,), name


def test_api_replicas_serve_on_all_interfaces(services: dict[str, Any]) -> None:
    for name in ("api-1", "api-2"):
        args = cli_parser().parse_args(services[name]["command"])
        assert (args.command, args.host, args.port) == ("api", "0.0.0.0", 8080)
        assert services[name]["environment"]["HEALTHCHECK_PORT"] == "8080"
    assert services["worker"]["environment"]["HEALTHCHECK_PORT"] == "9100"


def test_emulator_is_a_profile_and_its_command_parses(services: dict[str, Any]) -> None:
    emulator = services["emulator"]
    assert emulator["profiles"] == ["emulator"]
    assert emulator["command"][0] == "emulator"
    from emulator.server import _parser as emulator_parser

    args = emulator_parser().parse_args(emulator["command"][1:])
    assert args.port == int(emulator["environment"]["HEALTHCHECK_PORT"])
    _, keys_target = _volume_parts(emulator["volumes"][0])
    assert Path(keys_target) == args.keys
    # the worker reads the same volume, at the same path, so notifier.env's paths hold
    worker_targets = [_volume_parts(v) for v in services["worker"]["volumes"]]
    assert ("emulator-keys", str(args.keys)) in worker_targets


def _has_healthcheck(service: dict[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and check.get("test") not in (["NONE"], None)
    build = service.get("build")
    if build:
        dockerfile = (ROOT / build["context"] / build["dockerfile"]).read_text()
        return re.search(r"^HEALTHCHECK\s+(?!NONE)", dockerfile, re.MULTILINE) is not None
    return False


def test_start_order_waits_on_services_that_have_health_checks(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must state conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            assert spec["condition"] == "service_healthy", f"{name} -> {target}"
            assert _has_healthcheck(services[target]), f"{target} has no health check"
            if "profiles" in services[target]:
                assert spec.get("required") is False, f"{name} requires profiled {target}"
    for name in ("api-1", "api-2", "worker"):
        assert {"mongodb", "rabbitmq"} <= set(services[name]["depends_on"])


def test_no_secret_values_inline(services: dict[str, Any]) -> None:
    text = COMPOSE_FILE.read_text()
    assert "notifier-demo" not in text and "admin-demo" not in text
    for name, service in services.items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: use a mapping for environment"
        for key, value in environment.items():
            assert not _SECRET_NAME.search(key), f"{name} sets {key} inline"
            assert "@" not in str(value), f"{name}: {key} looks like a URL with credentials"


def test_secrets_key_reaches_the_api_and_workers_from_the_git_ignored_env_file(
    services: dict[str, Any],
) -> None:
    """NOTIFIER_SECRETS_KEY (per-app credentials) is read by the API replicas and every
    worker from deploy/notifier.env, which git ignores; the committed example names it
    without a value, so nobody runs on a published key."""
    for name in ("api-1", "api-2", "worker", "worker-transactional", "worker-bulk"):
        paths = [f["path"] for f in _env_files(services[name])]
        assert "deploy/notifier.env" in paths, name
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/notifier.env"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "deploy/notifier.env must be git-ignored"
    example = ROOT / "deploy" / "notifier.env.example"
    lines = example.read_text().splitlines()
    assert "# NOTIFIER_SECRETS_KEY=" in lines and "# NOTIFIER_SECRETS_KEY_PREVIOUS=" in lines
    env = _read_env_file(example)
    assert "NOTIFIER_SECRETS_KEY" not in env
    key = new_key()
    assert load_settings({**env, "NOTIFIER_SECRETS_KEY": key}).secrets_key is not None


def test_example_settings_are_valid_and_point_at_the_compose_services(
    services: dict[str, Any],
) -> None:
    env = _read_env_file(ROOT / "deploy" / "notifier.env.example")
    settings = load_settings(env)
    assert settings.store_url == "mongodb://mongodb:27017/notifier?replicaSet=rs0"
    assert settings.store_kind == "mongodb"
    amqp = urlsplit(settings.amqp_url)
    assert urlsplit(settings.store_url).hostname in services
    assert amqp.hostname in services
    init = (ROOT / "deploy" / "mongo" / "init-replica-set.js").read_text()
    assert '_id: "rs0"' in init and 'host: "mongodb:27017"' in init
    mongod = services["mongodb"]["command"]
    assert mongod[mongod.index("--replSet") + 1] == "rs0"


def _definitions() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text()
    )
    return data


def test_rabbitmq_definitions_match_what_the_broker_declares() -> None:
    settings = Settings()
    defs = _definitions()
    queues = {q["name"]: q for q in defs["queues"]}
    work = queues[settings.queue]
    assert work["arguments"] == broker.queue_arguments(settings)
    assert (work["durable"], work["auto_delete"]) == (True, False)
    dead = queues[settings.dead_letter_queue]
    assert dead["arguments"] == {"x-queue-type": "quorum"}
    assert (dead["durable"], dead["auto_delete"]) == (True, False)
    (dlx,) = [e for e in defs["exchanges"] if e["name"] == broker.DLX_EXCHANGE]
    assert (dlx["type"], dlx["durable"], dlx["auto_delete"]) == ("direct", True, False)
    assert {
        "source": broker.DLX_EXCHANGE,
        "destination": settings.dead_letter_queue,
        "destination_type": "queue",
        "routing_key": settings.dead_letter_queue,
    }.items() <= defs["bindings"][0].items()
    vhosts = {v["name"] for v in defs["vhosts"]}
    for item in [*defs["queues"], *defs["exchanges"], *defs["bindings"], *defs["policies"]]:
        assert item["vhost"] in vhosts


def _rabbit_password_matches(password_hash: str, password: str) -> bool:
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return hashlib.sha256(salt + password.encode()).digest() == digest


def test_example_amqp_url_logs_in_with_the_example_users() -> None:
    env = _read_env_file(ROOT / "deploy" / "notifier.env.example")
    url = urlsplit(env["NOTIFIER_AMQP_URL"])
    users = json.loads((ROOT / "deploy" / "rabbitmq" / "users.example.json").read_text())
    (user,) = [u for u in users["users"] if u["name"] == url.username]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert url.password and _rabbit_password_matches(user["password_hash"], url.password)
    vhost = url.path.lstrip("/")
    assert vhost in {v["name"] for v in _definitions()["vhosts"]}
    assert any(p["user"] == url.username and p["vhost"] == vhost for p in users["permissions"])


def test_rabbitmq_loads_both_definition_files_from_one_directory(
    services: dict[str, Any],
) -> None:
    conf = (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text()
    match = re.search(r"^definitions\.local\.path\s*=\s*(\S+)", conf, re.MULTILINE)
    assert match
    targets = [_volume_parts(v)[1] for v in services["rabbitmq"]["volumes"]]
    in_dir = [t for t in targets if t.startswith(match.group(1) + "/")]
    assert len(in_dir) == 2 and all(t.endswith(".json") for t in in_dir)


def test_prometheus_targets_are_the_compose_services(services: dict[str, Any]) -> None:
    config = yaml.safe_load(DOCKER_PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    api_targets = jobs["api"]["static_configs"][0]["targets"]
    assert sorted(api_targets) == ["api-1:8080", "api-2:8080"]
    (dns,) = jobs["worker"]["dns_sd_configs"]
    workers = {name for name, s in services.items() if s.get("command", [None])[0] == "worker"}
    assert workers == {"worker", "worker-transactional", "worker-bulk"}
    assert set(dns["names"]) == workers and dns["type"] == "A" and dns["port"] == 9100
    mounts = {_volume_parts(v) for v in services["prometheus"]["volumes"]}
    for rule_file in config["rule_files"]:
        assert (f"./prometheus/{rule_file}", f"/etc/prometheus/{rule_file}") in mounts


def test_grafana_provisioning_matches_the_mounts(services: dict[str, Any]) -> None:
    mounts = dict(_volume_parts(v) for v in services["grafana"]["volumes"])
    providers = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "dashboards" / "notifier.yml").read_text()
    )
    assert providers["providers"][0]["options"]["path"] == mounts["./grafana/dashboards"]
    datasources = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = datasources["datasources"]
    assert urlsplit(source["url"]).hostname in services


def test_worker_entrypoint_execs_the_notifier_command(services: dict[str, Any]) -> None:
    entrypoint = services["worker"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"]
    script = entrypoint[2].replace("$$", "$")
    assert 'exec notifier "$@"' in script
    shlex.split(script)  # quoting is balanced
