"""The local server as a background process that outlives one `railyard run`.

The foreground server (``railyard serve``, or ``python -m infra.local_server``) writes a state
file (pid, ports, config) once both ports listen and removes it when it stops: clients read the
ports from there. ``ensure_local_server`` reuses a live server found through that file or starts
``python -m infra.local_server`` detached with the config and state folder it was given, its log
beside the state file; ``stop`` ends it. A port left unchosen (None) is TF Serving's default when
that is free and any free port otherwise, so several homes share a machine; a chosen port that
another program holds is refused before anything starts (``check_ports_free``).
Railyard's server exposes TF Serving's Prometheus metrics by default: unless told another
monitoring config, it reads ``monitoring.config`` of its state folder (written on first use,
enabling ``/monitoring/prometheus/metrics``; edit it to change the path or turn them off).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import infra.platform.service as service
from infra.tfserving.protocol import CONFIG_FILE
from railyard.errors import PortTaken, RailyardError
from railyard.fsutil import ExposedSecretFile, atomic_write_text, owner_only_secret
from railyard.processes import arguments, current_process, holder_of, identity, listener, port_free, process_alive

if TYPE_CHECKING:
    from railyard.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "server.json"
LOG_FILE = "server.log"
TOKEN_FILE = "reload.token"  # owner-only: whoever can read it may change what is served
MONITORING_FILE = "monitoring.config"  # the default --monitoring_config_file
START_TIMEOUT_S = 240.0  # the child imports TensorFlow (~20 s here) and loads the served versions
# The last line a server that failed to start writes to its log (read by ensure_local_server).
START_FAILED = "local server start-up failed: "


class LocalServerError(RailyardError):
    """The local server could not be started (or another one holds its state folder)."""

    next_step = "production is unchanged; run again once serving is back (a published version is picked up)"


@dataclass(frozen=True)
class LocalServerState:
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


def write_state(state_dir: Path, state: LocalServerState) -> None:
    service.write_state(Path(state_dir) / STATE_FILE, state.__dict__)


def clear_state(state_dir: Path, pid: int) -> None:
    """Remove the state file if it still describes this process."""
    service.clear_state(Path(state_dir) / STATE_FILE, pid)


def read_state(state_dir: Path) -> LocalServerState | None:
    try:
        return LocalServerState(**(service.read_state(Path(state_dir) / STATE_FILE) or {}))
    except TypeError:  # missing, or not a server's state
        return None


def running(state_dir: Path) -> LocalServerState | None:
    """The live server of this state folder, or None (a stale state file is removed). A state
    file naming another process than the folder's server that listens on its ports (an orphan,
    told by its command line) is written again for that server."""
    state = read_state(state_dir)
    if state is None:
        return None
    if _is_server(state) and _answers(state.rest_url):
        return state
    found = _adopt_orphan(Path(state_dir), state)
    if found is not None and _answers(found.rest_url):
        return found
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


def check_ports_free(chosen: dict[str, int | None]) -> None:
    """Refuse (PortTaken) a chosen port that another program listens on. ``chosen`` maps the
    setting (or option) that chose each port to it; unchosen (None) and 0 (any free port) pass."""
    for setting, port in chosen.items():
        if port and not port_free(port):
            raise PortTaken(f"port {port} ({setting}) is taken by {holder_of(port)}", setting)


def port_settings(settings: Settings) -> dict[str, int | None]:
    """The home's local serving ports, by the setting that chooses each."""
    return {
        "RAILYARD_LOCAL_SERVING_REST_PORT": settings.local_serving_rest_port,
        "RAILYARD_LOCAL_SERVING_GRPC_PORT": settings.local_serving_grpc_port,
    }


def start_for(settings: Settings) -> LocalServerState:
    """The home's local server for its model root: the one running, or one started in the
    background on the settings' ports (a port set that another program holds refused at once)."""
    if (state := running(settings.local_serving_dir)) is not None:
        return state
    check_ports_free(port_settings(settings))
    return ensure_local_server(
        settings.local_serving_dir,
        settings.resolved_serving_model_root / CONFIG_FILE,
        settings.local_serving_rest_port,
        settings.local_serving_grpc_port,
    )


def ensure_local_server(
    state_dir: Path,
    config_path: Path,
    rest_port: int | None,
    grpc_port: int | None,
    monitoring_config: Path | None = None,
) -> LocalServerState:
    """A live local server for ``config_path``: the one already running, or a new one (reading
    ``monitoring_config``, by default the state folder's). A port None is TF Serving's default
    when free, else any free one; 0 is any free one."""
    from infra.tfserving.model_config import ensure_config_file

    state_dir = Path(state_dir)
    state = running(state_dir)
    if state is not None:
        if Path(state.config_path) != Path(config_path):
            raise LocalServerError(
                f"the local server (pid {state.pid}) serves {state.config_path}, not {config_path}; "
                "stop it with `railyard serve --stop`"
            )
        return state
    ensure_config_file(config_path)  # a file it cannot start from is named here, before the start
    state_dir.mkdir(parents=True, exist_ok=True)
    command = command_line(state_dir, config_path, rest_port, grpc_port, monitoring_config)
    log_path = state_dir / LOG_FILE
    child, logged_before = service.start_detached(command, log_path)

    def exited(child) -> LocalServerError:
        reason = start_failure(log_path, logged_before) or f"exit code {child.returncode}"
        return LocalServerError(f"the local serving process exited: {reason} (log: {log_path})")

    return service.wait_started(
        child,
        lambda: state if (state := read_state(state_dir)) is not None and state.pid == child.pid else None,
        timeout_s=START_TIMEOUT_S,
        exited=exited,
        timed_out=lambda: TimeoutError(f"the local server did not start within {START_TIMEOUT_S:g} s; see {log_path}"),
    )


def command_line(
    state_dir: Path, config_path: Path, rest_port: int | None, grpc_port: int | None, monitoring_config: Path | None
) -> list[str]:
    """The command line of this folder's server (``python -m infra.local_server``)."""
    return [
        sys.executable,
        "-m",
        "infra.local_server",
        "--model_config_file",
        str(config_path),
        "--state_dir",
        str(state_dir),
        *(["--port", str(grpc_port)] if grpc_port is not None else []),
        *(["--rest_api_port", str(rest_port)] if rest_port is not None else []),
        "--monitoring_config_file",
        str(monitoring_config or default_monitoring_config(state_dir)),
    ]


def start_failure(log_path: Path, offset: int = 0) -> str | None:
    """Why the server started at ``offset`` of its log did not start, as it said last."""
    said = [
        line.removeprefix(START_FAILED) for line in service.log_lines(log_path, offset) if line.startswith(START_FAILED)
    ]
    return said[-1] if said else None


def serve_foreground(
    state_dir: Path,
    config_path: Path,
    rest_port: int | None,
    grpc_port: int | None,
    host: str = "127.0.0.1",
    monitoring_config: Path | None = None,
    on_started: Callable[[LocalServerState], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM, announcing the server in the state folder while it runs (and
    to ``on_started``). Ports as in ``ensure_local_server``.

    Models the config lists with no version to serve are dropped from it first (TF Serving would
    wait for them forever). Fails (like TF Serving) when the config's models cannot be loaded or
    the monitoring config (by default the state folder's) is malformed, or when this state
    folder already has a live server.
    """
    from infra.local_server.server import LocalServingServer
    from infra.tfserving.model_config import ensure_config_file

    state_dir = Path(state_dir)
    other = running(state_dir)
    if other is not None:
        raise LocalServerError(f"a local server already runs for {state_dir} (pid {other.pid}, REST {other.rest_url})")
    for model in ensure_config_file(config_path):
        log.warning("%s listed model %s with no version to serve: dropped it from the file", config_path, model)
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
    state = LocalServerState(os.getpid(), server.rest_port, server.grpc_port, str(config_path), current_process())
    write_state(state_dir, state)
    if on_started is not None:
        on_started(state)
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


def stop(state_dir: Path, timeout_s: float = 30.0) -> LocalServerState | None:
    """Stop the background server (SIGTERM, then SIGKILL); the state it had, or None when no
    server of this folder runs. A stale state file is removed; its pid is never signalled
    unless it is still the very process that wrote the file (same pid and start time). The
    folder's server found on a stale file's ports by its command line (an orphan) is stopped."""
    state = read_state(state_dir)
    if state is not None and not _is_server(state):
        state = _adopt_orphan(Path(state_dir), state)
    if state is None:
        (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
        return None
    service.stop_process(state.pid, lambda: _is_server(state), timeout_s)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    return state


def _adopt_orphan(state_dir: Path, stale: LocalServerState) -> LocalServerState | None:
    """This folder's server listening on the ports of a state file that names another process
    (``python -m infra.local_server --state_dir <this folder>``): the file is written again for
    it. None when no such server listens there; another program there is never touched."""
    for port in (stale.rest_port, stale.grpc_port):
        found = listener(port)
        if found is None or _flag(found["pid"], "--state_dir", state_dir) != state_dir.resolve():
            continue
        pid = found["pid"]
        config_path = _flag(pid, "--model_config_file", state_dir) or Path(stale.config_path)
        adopted = LocalServerState(pid, stale.rest_port, stale.grpc_port, str(config_path), identity(pid))
        log.warning(
            "%s named pid %d, not the server of %s (pid %d): written again", STATE_FILE, stale.pid, state_dir, pid
        )
        write_state(state_dir, adopted)
        return adopted
    return None


def _is_server(state: LocalServerState) -> bool:
    """The process that wrote the state file still runs. Without /proc (no start times to
    compare) the pid must at least exist and the server answer on its REST port."""
    service.reap(state.pid)  # a dead child of this process is reaped, so it is gone
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
    args = arguments(pid)
    return "infra.local_server" in args and config_path in args


def _flag(pid: int, name: str, state_dir: Path) -> Path | None:
    """The resolved path a ``python -m infra.local_server`` process was given for ``name``."""
    args = arguments(pid)
    if "infra.local_server" not in args or name not in args[:-1]:
        return None
    given = Path(args[args.index(name) + 1])
    try:
        return (given if given.is_absolute() else Path(f"/proc/{pid}/cwd").readlink() / given).resolve()
    except OSError:
        return None


def _answers(rest_url: str) -> bool:
    # Outside the /v1/ API, so the probe is not counted in the server's request metrics.
    return service.http_answers(f"{rest_url}/")
