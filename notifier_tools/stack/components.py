"""What the local stack is made of: its run folder, its settings and each component's command.

``stack.json`` in the run folder records the choices of the first ``up`` (ports, store,
queue, worker count), so ``status``, ``down``, ``notifier bench`` and a second ``up`` all
read the same layout. Components start in :data:`START_ORDER` and stop in reverse.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

DEFAULT_PG_URL = "postgresql://notifier:notifier@127.0.0.1:5432/notifier"
# The MongoDB-compatible stand-in that scripts/services.sh starts (a test tool, not mongod).
DEFAULT_MONGODB_URL = "mongodb://127.0.0.1:27017/notifier"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
HOST = "127.0.0.1"
API_REPLICAS = 2
NGINX = "/usr/sbin/nginx"
PROMETHEUS = "/usr/bin/prometheus"
START_ORDER = ("emulator", "api", "nginx", "worker", "prometheus")


@dataclass(frozen=True, slots=True)
class Ports:
    nginx: int = 8080
    api_base: int = 8081
    worker_base: int = 9101
    emulator: int = 8443
    prometheus: int = 9090


@dataclass(frozen=True, slots=True)
class StackConfig:
    """The stack's choices, saved as ``stack.json`` on the first ``up``."""

    run_dir: str
    store_url: str
    amqp_url: str = DEFAULT_AMQP_URL
    queue: str = "notifications"
    workers: int = 2
    concurrency: int = 256
    lock_seconds: int = 30
    ports: Ports = field(default_factory=Ports)

    # -- layout ---------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.run_dir)

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pids_dir(self) -> Path:
        return self.root / "pids"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def api_key_file(self) -> Path:
        return self.root / "api-key"

    @property
    def config_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def settings_file(self) -> Path:
        """The settings ``notifier apikey|dlq|prune`` read when run beside the stack."""
        return self.root / "env"

    @property
    def secrets_key_file(self) -> Path:
        """The stack's ``NOTIFIER_SECRETS_KEY`` (per-app credentials), made on the first up."""
        return self.keys_dir / "secrets-key"

    def secrets_key(self) -> str | None:
        """The key the API and workers get: the environment's, else the run folder's."""
        if os.environ.get("NOTIFIER_SECRETS_KEY"):
            return os.environ["NOTIFIER_SECRETS_KEY"]
        try:
            return self.secrets_key_file.read_text().strip() or None
        except OSError:
            return None

    def ensure_secrets_key(self) -> None:
        """Make the run folder's secrets key once (owner-only), so that apps of the stack
        can have credentials of their own (docs/credentials.md) without a set-up step."""
        if self.secrets_key_file.is_file():
            return
        from notifier.credentials.sealing import new_key

        fd = os.open(self.secrets_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")

    @property
    def ca_file(self) -> Path:
        return self.keys_dir / "ca.pem"

    @property
    def base_url(self) -> str:
        """Where upstream apps post: nginx in front of the API replicas."""
        return f"http://{HOST}:{self.ports.nginx}"

    @property
    def emulator_url(self) -> str:
        return f"https://{HOST}:{self.ports.emulator}"

    @property
    def prometheus_url(self) -> str:
        return f"http://{HOST}:{self.ports.prometheus}"

    def api_ports(self) -> list[int]:
        return [self.ports.api_base + i for i in range(API_REPLICAS)]

    def worker_ports(self) -> list[int]:
        return [self.ports.worker_base + i for i in range(self.workers)]

    def worker_port(self, index: int) -> int:
        """Metrics port of ``worker-<index>`` (1-based)."""
        return self.ports.worker_base + index - 1

    # -- persistence ----------------------------------------------------------------------
    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # The store URL may carry a password: owner-only, like the API key beside it.
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self), indent=1))

    def save_settings_file(self) -> None:
        """Write :attr:`settings_file`: the store, broker, queue (and secrets key) of the
        stack's processes.

        In the default run folder (``.run/stack``) the commands run by hand in this
        checkout find it (``notifier.settings.load_settings_beside_stack``), so a key made
        with ``notifier apikey create`` is one the stack's API knows. Owner-only: the store
        URL may carry a password.
        """
        from notifier.settings import format_settings_file

        values = {
            "NOTIFIER_STORE_URL": self.store_url,
            "NOTIFIER_AMQP_URL": self.amqp_url,
            "NOTIFIER_QUEUE": self.queue,
        }
        secrets_key = self.secrets_key()
        if secrets_key is not None:  # `notifier app credentials` beside the stack
            values["NOTIFIER_SECRETS_KEY"] = secrets_key
        header = (
            "Written by `notifier stack up`: the settings of this stack's processes.\n"
            "`notifier apikey|dlq|prune` run in this checkout without NOTIFIER_STORE_URL use them."
        )
        fd = os.open(self.settings_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(format_settings_file(values, header))

    @classmethod
    def load(cls, run_dir: Path) -> StackConfig | None:
        path = run_dir / "stack.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        ports = Ports(**raw.pop("ports", {}))
        return cls(**{**raw, "run_dir": str(run_dir)}, ports=ports)

    def with_workers(self, workers: int) -> StackConfig:
        return replace(self, workers=workers)

    def api_key(self) -> str | None:
        try:
            return self.api_key_file.read_text().strip() or None
        except OSError:
            return None


def notifier_argv(*args: str) -> list[str]:
    """Run a ``notifier`` subcommand with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "notifier", *args]


def product_env(config: StackConfig) -> dict[str, str]:
    """Environment of the API, the workers and ``apikey create``: ours, plus the stack's."""
    env = dict(os.environ)
    env.update(
        {
            "NOTIFIER_STORE_URL": config.store_url,
            "NOTIFIER_AMQP_URL": config.amqp_url,
            "NOTIFIER_QUEUE": config.queue,
            "NOTIFIER_LOCK_SECONDS": str(config.lock_seconds),
            "NOTIFIER_LOG_FORMAT": "json",
        }
    )
    secrets_key = config.secrets_key()
    if secrets_key is not None:
        env["NOTIFIER_SECRETS_KEY"] = secrets_key
    env_file = config.keys_dir / "notifier.env"
    if env_file.is_file():
        from notifier_tools.stack.processes import read_env_file

        env.update(read_env_file(env_file))
    return env


@dataclass(frozen=True, slots=True)
class Component:
    """One process of the stack: its name (PID file, log), command, port and health URL."""

    name: str
    kind: str
    argv: list[str]
    port: int
    health_url: str


def emulator_component(config: StackConfig) -> Component:
    port = config.ports.emulator
    argv = notifier_argv("emulator", "--keys", str(config.keys_dir), "--host", HOST)
    health = f"https://{HOST}:{port}/_emulator/health"
    return Component("emulator", "emulator", [*argv, "--port", str(port)], port, health)


def api_components(config: StackConfig) -> list[Component]:
    return [
        Component(
            f"api-{i + 1}",
            "api",
            notifier_argv("api", "--host", HOST, "--port", str(port)),
            port,
            f"http://{HOST}:{port}/ready",
        )
        for i, port in enumerate(config.api_ports())
    ]


def nginx_component(config: StackConfig) -> Component:
    prefix = config.root / "nginx"
    conf = prefix / "nginx.conf"
    argv = [NGINX, "-p", f"{prefix}/", "-e", str(prefix / "error.log"), "-c", str(conf)]
    argv += ["-g", "daemon off;"]
    port = config.ports.nginx
    return Component("nginx", "nginx", argv, port, f"http://{HOST}:{port}/health")


def worker_component(config: StackConfig, index: int) -> Component:
    port = config.worker_port(index)
    argv = notifier_argv(
        "worker",
        "--host",
        HOST,
        "--metrics-port",
        str(port),
        "--concurrency",
        str(config.concurrency),
    )
    return Component(f"worker-{index}", "worker", argv, port, f"http://{HOST}:{port}/health")


def prometheus_component(config: StackConfig) -> Component:
    port = config.ports.prometheus
    argv = [
        PROMETHEUS,
        f"--config.file={config.root / 'prometheus.yml'}",
        f"--storage.tsdb.path={config.data_dir / 'prometheus'}",
        f"--web.listen-address={HOST}:{port}",
        "--storage.tsdb.retention.time=2d",
    ]
    return Component("prometheus", "prometheus", argv, port, f"http://{HOST}:{port}/-/ready")


def all_components(config: StackConfig) -> list[Component]:
    """Every component in start order."""
    return [
        emulator_component(config),
        *api_components(config),
        nginx_component(config),
        *(worker_component(config, i + 1) for i in range(config.workers)),
        prometheus_component(config),
    ]


def render_nginx(config: StackConfig) -> None:
    """Write nginx's config (its own prefix in the run folder) from the repo's renderer."""
    from notifier_tools.nginxconf import render_nginx_config

    prefix = config.root / "nginx"
    prefix.mkdir(parents=True, exist_ok=True)
    api_addresses = [f"{HOST}:{p}" for p in config.api_ports()]
    (prefix / "nginx.conf").write_text(
        render_nginx_config(config.ports.nginx, api_addresses, prefix)
    )


def render_prometheus(config: StackConfig) -> None:
    """Write Prometheus's config: static targets for the APIs and every worker, our alerts."""
    from notifier_tools.promconf import render_local_prometheus_config

    rules = Path(__file__).resolve().parents[2] / "prometheus" / "alerts.yml"
    (config.data_dir / "prometheus").mkdir(parents=True, exist_ok=True)
    (config.root / "prometheus.yml").write_text(
        render_local_prometheus_config(
            [f"{HOST}:{p}" for p in config.api_ports()],
            [f"{HOST}:{p}" for p in config.worker_ports()],
            [str(rules)] if rules.is_file() else [],
        )
    )
