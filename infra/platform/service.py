"""What every embedded server shares: its state file, a detached start that waits until the server
says it is up, health probes, a stop by the recorded pid, and the capped restart backoff.

A state file is a JSON object written atomically; it names the process by its identity
(``railyard.processes``: host, pid, start time), so a pid that was reused is never signalled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from railyard.fsutil import atomic_write_text

T = TypeVar("T")
KILLED_WITHIN_S = 5.0  # a SIGKILLed process is gone once the kernel has torn it down


def read_state(path: Path) -> dict | None:
    """The state file's object, or None when it is missing or unreadable."""
    try:
        state = json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(path: Path, state: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(path), json.dumps(state))


def clear_state(path: Path, pid: int) -> None:
    """Remove the state file if it still describes process ``pid``."""
    state = read_state(path)
    if state is not None and state.get("pid") == pid:
        Path(path).unlink(missing_ok=True)


def start_detached(
    command: list[str],
    log_path: Path,
    *,
    env: dict | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> tuple[subprocess.Popen, int]:
    """Start ``command`` (as system ``user``, if given) in a session of its own (it outlives its
    starter; a terminal's Ctrl-C does not reach it), its output appended to ``log_path``; the
    child and the log's size before it."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        offset = log.tell()
        child = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
            user=user,
        )
    return child, offset


def wait_started(
    child: subprocess.Popen,
    ready: Callable[[], T | None],
    *,
    timeout_s: float,
    exited: Callable[[subprocess.Popen], Exception],
    timed_out: Callable[[], Exception],
    interval_s: float = 0.2,
) -> T:
    """What ``ready`` returns once it returns something; ``exited(child)`` is raised when the child
    ends first, ``timed_out()`` (the child terminated) when ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while (value := ready()) is None:
        if child.poll() is not None:
            raise exited(child)
        if time.monotonic() > deadline:
            child.terminate()
            raise timed_out()
        time.sleep(interval_s)
    return value


def stop_process(
    pid: int, alive: Callable[[], bool], grace_s: float, *, group: bool = False, signum: int = signal.SIGTERM
) -> None:
    """``signum`` to ``pid`` (with ``group``, to its whole process group: a service and what it
    started), then SIGKILL once ``grace_s`` passed while ``alive()`` still holds. Call it only for
    a process known to be the recorded one (its identity checked)."""
    send = os.killpg if group else os.kill
    try:
        send(pid, signum)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        reap(pid)
        if not alive():
            break
        time.sleep(0.05)
    if alive() or group:  # the group: a child that ignored SIGTERM (its leader gone) still ends
        try:
            send(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + KILLED_WITHIN_S
    while time.monotonic() < deadline:
        reap(pid)
        if not alive():
            return
        time.sleep(0.02)


def kill_group(leader: int) -> None:
    """SIGKILL whatever is left of the process group ``leader`` led (its leader gone or not). A
    group's id is not given to a new process while any member lives, so only its own are hit."""
    try:
        os.killpg(leader, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    reap(leader)


def reap(pid: int) -> None:
    """Collect a dead child of this process (until then it still has a pid)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child


def restart_delay_s(restarts: int, base_s: float, cap_s: float) -> float:
    """How long to wait before restart number ``restarts + 1``: doubling from ``base_s``, at most ``cap_s``."""
    return min(cap_s, base_s * 2 ** min(restarts, 30))


def http_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Something answers HTTP at ``url`` (an error status is still an answer)."""
    try:
        urllib.request.urlopen(url, timeout=timeout_s)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def tcp_answers(port: int, host: str = "127.0.0.1", timeout_s: float = 2.0) -> bool:
    """Something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the system's choice)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def log_lines(path: Path, offset: int = 0) -> list[str]:
    """The lines of a log from byte ``offset`` on (none when it is missing)."""
    try:
        with open(path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return []
