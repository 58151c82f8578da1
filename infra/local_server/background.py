"""The local server as a background process that outlives one `railyard run`.

The foreground server (``railyard serve``, or ``python -m infra.local_server``) writes a state
file (pid, ports, config) once both ports listen and removes it when it stops. ``ensure_running``
reuses a live server found through that file or starts ``python -m infra.local_server`` detached
with the config and state folder it was given, its log beside the state file; ``stop`` ends it.
Railyard's server exposes TF Serving's Prometheus metrics by default: unless told another
monitoring config, it reads ``monitoring.config`` of its state folder (written on first use,
enabling ``/monitoring/prometheus/metrics``; edit it to change the path or turn them off).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from railyard.errors import RailyardError
from railyard.fsutil import ExposedSecretFile, atomic_write_text, owner_only_secret
from railyard.processes import current_process, process_alive

STATE_FILE = "server.json"
LOG_FILE = "server.log"
TOKEN_FILE = "reload.token"  # owner-only: whoever can read it may change what is served
MONITORING_FILE = "monitoring.config"  # the default --monitoring_config_file
START_TIMEOUT_S = 240.0  # the child imports TensorFlow (~20 s here) and loads the served versions


class LocalServerError(RailyardError):
    """The local server could not be started (or another one holds its state folder)."""

    next_step = "production is unchanged; run again once serving is back (a published version is picked up)"


@dataclass(frozen=True)
class ServerState:
    pid: int
    rest_port: int
    grpc_port: int
    config_path: str
    # Host, pid and start time: a stale file whose pid now belongs to another process names
    # a process that is gone, so it is never signalled. None: a file from an older Railyard.
    process: dict | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def write_state(state_dir: Path, state: ServerState) -> None:
    atomic_write_text(Path(state_dir) / STATE_FILE, json.dumps(state.__dict__))


def clear_state(state_dir: Path, pid: int) -> None:
    """Remove the state file if it still describes this process."""
    current = read_state(state_dir)
    if current is not None and current.pid == pid:
        (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)


def read_state(state_dir: Path) -> ServerState | None:
    path = Path(state_dir) / STATE_FILE
    try:
        return ServerState(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def running(state_dir: Path) -> ServerState | None:
    """The live server of this state folder, or None (a stale state file is removed)."""
    state = read_state(state_dir)
    if state is None:
        return None
    if _is_server(state) and _answers(state.rest_url):
        return state
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return None


def default_monitoring_config(state_dir: Path) -> Path:
    """The state folder's monitoring config, written (Prometheus metrics on) if it is missing."""
    from infra.local_server.monitoring import DEFAULT_MONITORING_CONFIG

    path = Path(state_dir) / MONITORING_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, DEFAULT_MONITORING_CONFIG)
    return path


def ensure_running(
    state_dir: Path, config_path: Path, rest_port: int, grpc_port: int, monitoring_config: Path | None = None
) -> ServerState:
    """A live local server for ``config_path``: the one already running, or a new one (reading
    ``monitoring_config``, by default the state folder's)."""
    state_dir = Path(state_dir)
    state = running(state_dir)
    if state is not None:
        if Path(state.config_path) != Path(config_path):
            raise LocalServerError(
                f"the local server (pid {state.pid}) serves {state.config_path}, not {config_path}; "
                "stop it with `railyard serve --stop`"
            )
        return state
    state_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "infra.local_server",
        "--model_config_file",
        str(config_path),
        "--state_dir",
        str(state_dir),
        "--port",
        str(grpc_port),
        "--rest_api_port",
        str(rest_port),
        "--monitoring_config_file",
        str(monitoring_config or default_monitoring_config(state_dir)),
    ]
    with open(state_dir / LOG_FILE, "ab") as log:
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state is not None and state.pid == child.pid:
            return state
        if child.poll() is not None:
            raise LocalServerError(
                f"the local serving process exited with code {child.returncode}; see {state_dir / LOG_FILE}"
            )
        time.sleep(0.2)
    child.terminate()
    raise TimeoutError(f"the local server did not start within {START_TIMEOUT_S:g} s; see {state_dir / LOG_FILE}")


def serve_foreground(
    state_dir: Path,
    config_path: Path,
    rest_port: int,
    grpc_port: int,
    host: str = "127.0.0.1",
    monitoring_config: Path | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, announcing the server in the state folder while it runs.

    Fails (like TF Serving) when the config's models cannot be loaded or the monitoring config
    (by default the state folder's) is malformed, or when this state folder already has a live
    server.
    """
    from infra.local_server.server import LocalServingServer

    state_dir = Path(state_dir)
    other = running(state_dir)
    if other is not None:
        raise LocalServerError(f"a local server already runs for {state_dir} (pid {other.pid}, REST {other.rest_url})")
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    server = LocalServingServer(
        config_path,
        rest_port=rest_port,
        grpc_port=grpc_port,
        host=host,
        model_root=Path(config_path).parent,  # the config lives in the model root it describes
        reload_token=reload_token(state_dir),
        monitoring_config_file=monitoring_config or default_monitoring_config(state_dir),
    ).start()
    state_dir.mkdir(parents=True, exist_ok=True)
    write_state(
        state_dir, ServerState(os.getpid(), server.rest_port, server.grpc_port, str(config_path), current_process())
    )
    try:
        stopped.wait()
    finally:
        clear_state(state_dir, os.getpid())
        server.stop()


def reload_token(state_dir: Path) -> str:
    """The token config reloads of this folder's server must carry, created on first use with
    owner-only permissions; a token file others can read is refused."""
    path = Path(state_dir) / TOKEN_FILE
    try:
        return owner_only_secret(path)
    except ExposedSecretFile as error:
        raise LocalServerError(
            f"{error}: anyone who reads it can change what is served; make it owner-only (chmod 600 {path})"
        ) from None


def stop(state_dir: Path, timeout_s: float = 30.0) -> ServerState | None:
    """Stop the background server (SIGTERM, then SIGKILL); the state it had, or None when no
    server of this folder runs. A stale state file is removed; its pid is never signalled
    unless it is still the very process that wrote the file (same pid and start time)."""
    state = read_state(state_dir)
    if state is None or not _is_server(state):
        (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
        return None
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_server(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_server(state):
        os.kill(state.pid, signal.SIGKILL)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return state


def _is_server(state: ServerState) -> bool:
    """The process that wrote the state file still runs. Without /proc (no start times to
    compare) the pid must at least exist and the server answer on its REST port."""
    try:
        os.waitpid(state.pid, os.WNOHANG)  # a dead child of this process is reaped, so it is gone
    except ChildProcessError:
        pass  # not our child
    known = process_alive(state.process)
    if known is not None:
        return known
    if state.process is None:  # an older Railyard's file: the pid's command line must be its server's
        return _serves(state.pid, state.config_path)
    try:
        os.kill(state.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _answers(state.rest_url)


def _serves(pid: int, config_path: str) -> bool:
    """The process runs ``python -m infra.local_server`` for this config file."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"infra.local_server" in arguments and config_path.encode() in arguments


def _answers(rest_url: str) -> bool:
    try:
        # Outside the /v1/ API, so the probe is not counted in the server's request metrics.
        urllib.request.urlopen(f"{rest_url}/", timeout=2)
    except urllib.error.HTTPError:
        return True  # an error status is still the server answering
    except OSError:
        return False
    return True
