"""Run the production TF Serving container through the Docker SDK.

The same container as the ``tfserving`` service of ``infra/stack/docker-compose.yml``: this module
holds the one copy of its image, entrypoint, arguments and health check, and
``tests/stack/test_compose.py`` checks the compose file against it. Use either the compose stack
or this launcher on a host, not both: they publish the same ports.

``docker`` is imported inside the functions that talk to the engine, so importing this
module stays cheap and works where no engine runs.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from railyard.errors import RailyardError, Refused

# Pinned, never `latest`: the server version decides reload and label behaviour (docs/architecture.md),
# and it matches the TensorFlow (2.21) that exports the models.
TFSERVING_IMAGE = "tensorflow/serving:2.21.0"
# The image is built for x86-64 only; elsewhere it runs under emulation.
TFSERVING_PLATFORM = "linux/amd64"
MODEL_ROOT_VOLUME = "railyard-models"
CONTAINER_NAME = "railyard-tfserving"

GRPC_PORT = 8500
REST_PORT = 8501
MODEL_ROOT = "/models"
CONFIG_MOUNT = "/config"
MODELS_CONFIG = f"{MODEL_ROOT}/models.config"
PROMETHEUS_METRICS_PATH = "/monitoring/prometheus/metrics"
# Files the container reads from CONFIG_MOUNT (infra/stack/tfserving/ in the repository).
CONFIG_FILES = ("batching_parameters.txt", "monitoring.config", "models.config")
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent / "stack" / "tfserving"

HEALTHCHECK_INTERVAL_S = 10
HEALTHCHECK_TIMEOUT_S = 5
HEALTHCHECK_RETRIES = 3
# Start-up loads every model named in models.config before the ports open.
HEALTHCHECK_START_PERIOD_S = 60
RESTART_POLICY = "unless-stopped"


def tfserving_command_args() -> list[str]:
    """The arguments of ``tensorflow_model_server``: the one list compose and the launcher use."""
    return [
        f"--port={GRPC_PORT}",
        f"--rest_api_port={REST_PORT}",
        f"--model_config_file={MODELS_CONFIG}",
        # Railyard reloads through gRPC; a file poll would silently overwrite what the RPC set.
        "--model_config_file_poll_wait_seconds=0",
        # Must stay > 0: a reload only updates the config of the file-system source, and it is
        # this poll that then finds and loads the listed versions (0 = poll once at start-up, so
        # reloaded versions would never load). `specific` versions keep it from loading others.
        "--file_system_poll_wait_seconds=1",
        "--enable_batching=true",
        f"--batching_parameters_file={CONFIG_MOUNT}/batching_parameters.txt",
        f"--monitoring_config_file={CONFIG_MOUNT}/monitoring.config",
        # The default retries a failed load 5 x 60 s with the status stuck at LOADING. The model
        # was checksum-verified before deploy, so retry once after 5 s and let smoke tests fail fast.
        "--max_num_load_retries=1",
        "--load_retry_interval_micros=5000000",
        # At start-up labels are checked before any version is loaded: without this a restart
        # with a labelled models.config (stable/canary) fails (server_core.cc).
        "--allow_version_labels_for_unavailable_models=true",
    ]


def tfserving_entrypoint() -> list[str]:
    """Seed an empty model root with the placeholder models.config, then run the server.

    Replaces the image's entrypoint, which would add ``--model_name``/``--model_base_path``.
    The trailing word becomes ``$0``; the command (``tfserving_command_args``) becomes ``"$@"``.
    """
    seed_then_serve = (
        f'test -e {MODELS_CONFIG} || cp {CONFIG_MOUNT}/models.config {MODELS_CONFIG}; exec tensorflow_model_server "$@"'
    )
    return ["bash", "-c", seed_then_serve, "tensorflow_model_server"]


def tfserving_healthcheck_test() -> list[str]:
    """Docker health check: the REST server answers the metrics page with 200.

    The image has neither curl nor wget, but it has bash: speak HTTP over /dev/tcp. The REST
    server only opens once the models in models.config have loaded, so 200 means ready.
    """
    probe = (
        f"exec 3<>/dev/tcp/127.0.0.1/{REST_PORT}"
        f" && printf 'GET {PROMETHEUS_METRICS_PATH} HTTP/1.1\\r\\nHost: localhost\\r\\n"
        "Connection: close\\r\\n\\r\\n' >&3"
        f" && timeout {HEALTHCHECK_TIMEOUT_S} head -n 1 <&3 | grep -q ' 200 '"
    )
    return ["CMD", "bash", "-c", probe]


class DockerEngineUnavailable(RailyardError):
    """No Docker engine answers; the message says what was tried and what to do."""


class LauncherError(Refused):
    """The container cannot be started or inspected as asked."""


@dataclass(frozen=True)
class ContainerStatus:
    state: str  # Docker's state (running, exited, created, restarting, ...) or "absent"
    health: str | None = None  # starting, healthy, unhealthy; None when absent or unchecked


def _seconds_to_ns(seconds: int) -> int:
    return seconds * 1_000_000_000


class TFServingLauncher:
    def __init__(
        self,
        image: str = TFSERVING_IMAGE,
        model_root_volume: str = MODEL_ROOT_VOLUME,
        config_dir: str | Path = DEFAULT_CONFIG_DIR,
        bind_host: str = "127.0.0.1",
        grpc_port: int = GRPC_PORT,
        rest_port: int = REST_PORT,
        name: str = CONTAINER_NAME,
    ) -> None:
        """``model_root_volume`` is a named volume (shared with the Railyard worker) or an
        absolute host path; ``config_dir`` is a host folder with ``CONFIG_FILES``."""
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            raise LauncherError(f"image {image!r} must carry a pinned version tag (not 'latest')")
        if "/" in model_root_volume and not PurePosixPath(model_root_volume).is_absolute():
            raise LauncherError(
                f"model_root_volume {model_root_volume!r} must be a volume name or an absolute host path"
            )
        try:
            ipaddress.ip_address(bind_host)
        except ValueError:
            raise LauncherError(f"bind_host {bind_host!r} is not an IP address (e.g. 127.0.0.1)") from None
        for label, port in (("grpc_port", grpc_port), ("rest_port", rest_port)):
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise LauncherError(f"{label} must be an integer in 1..65535, got {port!r}")
        if grpc_port == rest_port:
            raise LauncherError(f"grpc_port and rest_port must differ, both are {grpc_port}")
        config_dir = Path(config_dir).resolve()
        missing = [file for file in CONFIG_FILES if not (config_dir / file).is_file()]
        if missing:
            raise LauncherError(f"config_dir {config_dir} lacks {', '.join(missing)} (see infra/stack/tfserving/)")
        self.image = image
        self.model_root_volume = model_root_volume
        self.config_dir = config_dir
        self.bind_host = bind_host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.name = name

    def container_spec(self) -> dict:
        """Keyword arguments for ``client.containers.create``."""
        return {
            "image": self.image,
            "name": self.name,
            "platform": TFSERVING_PLATFORM,
            "entrypoint": tfserving_entrypoint(),
            "command": tfserving_command_args(),
            "ports": {
                f"{GRPC_PORT}/tcp": (self.bind_host, self.grpc_port),
                f"{REST_PORT}/tcp": (self.bind_host, self.rest_port),
            },
            "volumes": {
                self.model_root_volume: {"bind": MODEL_ROOT, "mode": "rw"},
                str(self.config_dir): {"bind": CONFIG_MOUNT, "mode": "ro"},
            },
            "healthcheck": {
                "test": tfserving_healthcheck_test(),
                "interval": _seconds_to_ns(HEALTHCHECK_INTERVAL_S),
                "timeout": _seconds_to_ns(HEALTHCHECK_TIMEOUT_S),
                "retries": HEALTHCHECK_RETRIES,
                "start_period": _seconds_to_ns(HEALTHCHECK_START_PERIOD_S),
            },
            "restart_policy": {"Name": RESTART_POLICY},
            "labels": {"org.railyard.component": "tfserving"},
        }

    def start(self) -> ContainerStatus:
        """Create and start the container; reuse a running one, restart a stopped one."""
        client = self._client()
        container = self._find(client)
        if container is None:
            self._ensure_image(client)
            container = client.containers.create(**self.container_spec())
        else:
            self._check_same_spec(container)
        if container.status != "running":
            container.start()
            container.reload()
        return _status_of(container)

    def stop(self, timeout: int = 10, remove: bool = False) -> ContainerStatus:
        """Stop the container (and remove it if asked); the model-root volume is kept."""
        container = self._find(self._client())
        if container is None:
            return ContainerStatus("absent")
        container.stop(timeout=timeout)  # a no-op on a stopped one; also ends a restart loop
        if remove:
            container.remove()
            return ContainerStatus("absent")
        container.reload()
        return _status_of(container)

    def status(self) -> ContainerStatus:
        container = self._find(self._client())
        return ContainerStatus("absent") if container is None else _status_of(container)

    def logs(self, tail: int = 100) -> str:
        container = self._find(self._client())
        if container is None:
            raise LauncherError(f"no container named {self.name!r}: nothing to show (start it first)")
        return container.logs(tail=tail).decode("utf-8", errors="replace")

    def _client(self):
        import docker

        try:
            return docker.from_env()
        except docker.errors.DockerException as exc:
            target = os.environ.get("DOCKER_HOST") or "the default socket (DOCKER_HOST is unset)"
            raise DockerEngineUnavailable(
                f"no Docker engine reachable: docker.from_env() tried {target} and failed ({exc}). "
                "Start Docker, or set DOCKER_HOST to a reachable engine; without Docker, "
                "run the local TF-Serving-compatible server with `railyard serve`."
            ) from exc

    def _find(self, client):
        import docker

        try:
            return client.containers.get(self.name)
        except docker.errors.NotFound:
            return None

    def _ensure_image(self, client) -> None:
        import docker

        try:
            client.images.get(self.image)
        except docker.errors.ImageNotFound:
            client.images.pull(self.image, platform=TFSERVING_PLATFORM)

    def _check_same_spec(self, container) -> None:
        """A container left by another version of this code would serve with other arguments."""
        config = container.attrs.get("Config", {})
        expected = {"Image": self.image, "Cmd": tfserving_command_args()}
        drift = {key: config.get(key) for key, value in expected.items() if config.get(key) != value}
        if drift:
            raise LauncherError(
                f"container {self.name!r} exists with a different {', '.join(drift)} ({drift}); "
                "remove it with stop(remove=True) and start again"
            )


def _status_of(container) -> ContainerStatus:
    health = container.attrs.get("State", {}).get("Health", {}).get("Status")
    return ContainerStatus(container.status, health)
