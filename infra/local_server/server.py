"""The local TF-Serving-compatible server: gRPC and REST ports around one ServerCore.

It loads exactly what its config file names, reading the file at start (so a restart serves
the same versions); every RPC reload replaces the config in memory and rewrites the file
atomically. A stand-in for development and tests: production runs the tensorflow/serving image.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from infra.local_server.core import ServerCore
from infra.local_server.grpc_service import add_services
from infra.local_server.monitoring import ServingMetrics, read_monitoring_config
from infra.local_server.rest import RestLimits, make_handler
from infra.tfserving.model_config import read_config, write_config_atomically
from infra.tfserving.protocol import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from railyard.processes import holder_of, port_free

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class BoundedHTTPServer(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` at once: a connection beyond that
    gets a 503 JSON answer at once and is closed, so stalled clients cannot take every thread."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "the server is at its connection limit; try again"}).encode()
            head = f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            try:
                request.sendall(f"{head}\r\nConnection: close\r\n\r\n".encode() + body)
            except OSError:
                pass  # the client is gone already
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class LocalServingServer:
    """``with LocalServingServer(config_path).start() as server: ...`` (ports 0 pick free ones;
    a port None is TF Serving's default, 8501 or 8500, when that is free, else any free one).

    ``allow_version_labels_for_unavailable_models`` mirrors TF Serving's flag of that name and
    defaults to True as in our compose stack: without it TF Serving refuses to start with any
    label in its config, because no version is AVAILABLE when labels are first checked.
    ``max_num_load_retries`` / ``load_retry_interval_s`` are TF Serving's defaults (5 x 60 s).
    Railyard's own launch (``background.serve_foreground``) also sets ``model_root`` (base paths
    must lie inside it) and ``reload_token`` (reloads must carry it); without them the server
    takes any reload, as TF Serving does. ``monitoring_config_file`` is TF Serving's flag: a
    MonitoringConfig that enables Prometheus serves TF Serving's metrics on the REST port at its
    path (``metrics_url``); without one that path is not found, as on TF Serving. The metrics are
    recorded either way, per server (``metrics``).
    """

    def __init__(
        self,
        config_path: Path,
        *,
        rest_port: int | None = 0,
        grpc_port: int | None = 0,
        host: str = "127.0.0.1",
        allow_version_labels_for_unavailable_models: bool = True,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        model_root: Path | None = None,
        reload_token: str | None = None,
        rest_limits: RestLimits = RestLimits(),
        monitoring_config_file: Path | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        # Read first: a malformed file stops the start before any model loads.
        self.metrics_path = None if monitoring_config_file is None else read_monitoring_config(monitoring_config_file)
        self.metrics = ServingMetrics()
        self._reload_token = reload_token
        self._rest_limits = rest_limits
        self.host = host
        self._requested_ports = (rest_port, grpc_port)
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.core = ServerCore(
            allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
            max_num_load_retries=max_num_load_retries,
            load_retry_interval_s=load_retry_interval_s,
            on_config_applied=lambda config: write_config_atomically(self.config_path, config),
            model_root=model_root,
            on_warmup=self.metrics.record_warmup,
        )
        self._grpc_server = None
        self._http_server: ThreadingHTTPServer | None = None

    @property
    def rest_url(self) -> str:
        return f"http://{self._client_host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"{self._client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        """Where Prometheus reads the metrics, or None when the monitoring config does not enable them."""
        return None if self.metrics_path is None else f"{self.rest_url}{self.metrics_path}"

    @property
    def _client_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host

    def start(self) -> LocalServingServer:
        """Load the config file's models (waiting for them, like TF Serving), then open both ports."""
        import grpc

        try:
            self.core.start(self._initial_config())
        except BaseException:
            self.core.stop()
            raise
        rest_port, grpc_port = self._requested_ports
        workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="local-serving-grpc")
        # Without so_reuseport=0 gRPC would silently share a port another server already uses.
        self._grpc_server = grpc.server(workers, options=[("grpc.so_reuseport", 0)])
        add_services(self._grpc_server, self.core, self._reload_token, self.metrics)
        handler = make_handler(self.core, self._rest_limits, self.metrics, self.metrics_path)
        try:
            self.grpc_port = self._listen("gRPC", grpc_port, DEFAULT_GRPC_PORT, self._add_grpc_port)
            self._grpc_server.start()
            self._http_server = self._listen(
                "REST",
                rest_port,
                DEFAULT_REST_PORT,
                lambda port: BoundedHTTPServer((self.host, port), handler, self._rest_limits.max_connections),
            )
        except OSError:
            self.stop()
            raise
        self.rest_port = self._http_server.server_address[1]
        # Polled for shutdown every 0.05 s (the default 0.5 s would be most of `railyard serve --stop`).
        threading.Thread(
            target=self._http_server.serve_forever, args=(0.05,), name="local-serving-rest", daemon=True
        ).start()
        log.info("Local TF Serving: gRPC %s, REST %s, config %s", self.grpc_target, self.rest_url, self.config_path)
        if self.metrics_url is not None:
            log.info("Prometheus metrics at %s", self.metrics_url)
        return self

    def _listen(self, kind: str, port: int | None, default: int, bind: Callable[[int], _T]) -> _T:
        """``bind(port)``; a port None is ``default`` when that is free, else any free port."""
        try:
            return bind(default if port is None else port)
        except OSError as exc:
            taken = f"the port is taken by {holder_of(default if port is None else port)}"
            if port is not None:
                cause = taken if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
                raise OSError(f"cannot listen for {kind} on {self.host}:{port}: {cause}") from None
            log.warning(
                "%s: %s port %d: %s; listening on any free port instead", self.config_path, kind, default, taken
            )
            return bind(0)

    def _add_grpc_port(self, port: int) -> int:
        try:
            return self._grpc_server.add_insecure_port(f"{self.host}:{port}")
        except RuntimeError as exc:  # gRPC says only "Failed to bind"; the probe tells whether it is taken
            busy = port and not port_free(port, self.host)
            raise OSError(errno.EADDRINUSE if busy else errno.EINVAL, str(exc)) from exc

    def _initial_config(self) -> ModelServerConfig:
        if not self.config_path.exists():
            log.info("No model config at %s yet: serving nothing until a config reload", self.config_path)
            return ModelServerConfig()
        return read_config(self.config_path)

    def stop(self) -> None:
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=1).wait()
            self._grpc_server = None
        self.core.stop()

    def __enter__(self) -> LocalServingServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
