"""Who a process is, recorded so that a later process can tell whether it is still alive, and
a supervised child process that one signal stops with everything it started.

A pid alone is not enough: pids are reused. The process's start time (``/proc/<pid>/stat``,
field 22, clock ticks since boot) together with the pid and host names exactly one process.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path


def _start_ticks(pid: int) -> int | None:
    """The start time of a live process; None for no process or a zombie (dead, not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[19])


def current_process() -> dict:
    """This process: host, pid and start time."""
    return identity(os.getpid())


def identity(pid: int) -> dict:
    """Process ``pid`` of this host: host, pid and start time (None when it is gone)."""
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def process_alive(identity: dict | None) -> bool | None:
    """True or False for a process of this host; None when that cannot be known here
    (another host, no identity, no /proc)."""
    if not identity or identity.get("host") != socket.gethostname() or identity.get("start") is None:
        return None
    return _start_ticks(int(identity["pid"])) == identity["start"]


def describe(identity: dict | None) -> str:
    return f"pid {identity['pid']} on {identity['host']}" if identity else "an unknown process"


def children(pid: int) -> list[dict]:
    """The live processes whose parent is ``pid``, each as ``current_process`` describes one."""
    return [identity for child in _child_table().get(pid, ()) if (identity := _identity(child))]


def descendants(pid: int) -> list[dict]:
    """Every live process below ``pid`` (children, their children, …); a process that outlived
    its parent (re-parented to init) is no longer among them."""
    table, found, todo = _child_table(), [], list(_child_table().get(pid, ()))
    while todo:
        child = todo.pop()
        if identity := _identity(child):
            found.append(identity)
        todo.extend(table.get(child, ()))
    return found


def _child_table() -> dict[int, list[int]]:
    """Parent pid → the pids of its children, from /proc."""
    table: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it ended meanwhile
            table.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry.name))
    return table


def _identity(pid: int) -> dict | None:
    start = _start_ticks(pid)
    return {"host": socket.gethostname(), "pid": pid, "start": start} if start is not None else None


def run_supervised(command: list[str], *, grace_s: float, cwd: Path | None = None) -> int:
    """Run ``command`` (a service that starts processes of its own, such as Prefect's worker and
    its flow runs) until it ends; its exit code. One SIGTERM or SIGINT to this process stops the
    service and what it started (``_terminate``); then 128 + the signal's number.

    The service runs in a session of its own, so that a terminal's Ctrl-C reaches it only
    through here. What its children detached from themselves (long-lived servers a flow run
    started, which later runs reuse) is left alone.
    """
    service = subprocess.Popen(command, cwd=cwd, start_new_session=True)
    received: list[int] = []
    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        received.append(signum)
        stop.set()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        while service.poll() is None and not stop.wait(0.2):
            pass
        if not received:
            return service.returncode
        _terminate(service, grace_s)
        return 128 + received[0]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _terminate(service: subprocess.Popen, grace_s: float) -> None:
    """Stop the service's children first, then the service, all within ``grace_s`` seconds.

    The service is frozen (SIGSTOP) while its children end: it can start no new one, and it
    cannot kill them on its own way out before they ended their work (Prefect's worker kills
    its flow runs' processes when it stops). Each child gets SIGTERM (a flow run then ends
    Crashed and runs its crash hooks); whatever still runs at the deadline gets SIGKILL.
    """
    deadline = time.monotonic() + grace_s
    os.kill(service.pid, signal.SIGSTOP)
    started = children(service.pid)
    for child in started:
        _signal(child, signal.SIGTERM)
    while time.monotonic() < deadline and any(map(process_alive, started)):
        time.sleep(0.2)
    for child in started:
        _signal(child, signal.SIGKILL)
    service.terminate()
    os.kill(service.pid, signal.SIGCONT)
    try:
        service.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait()


def _signal(identity: dict, signum: int) -> None:
    """Signal the process ``identity`` names, if it is still that process."""
    if process_alive(identity):
        try:
            os.kill(identity["pid"], signum)
        except ProcessLookupError:
            pass  # it ended meanwhile


def listener(port: int) -> dict | None:
    """The process of this host that listens on TCP ``port`` (any address): ``{"pid", "command"}``
    (its command line), or None when no socket listens there or its process cannot be seen
    (another user's, without the rights to look)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is ADDRESS:PORT in hex; state 0A is LISTEN; field 9 the socket's inode.
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for process in Path("/proc").iterdir():
        if process.name.isdigit() and any(_link(fd) in inodes for fd in _files(process)):
            return {"pid": int(process.name), "command": command_line(int(process.name))}
    return None


def _files(process: Path) -> list[Path]:
    """The process's open file descriptors (none when it is gone or not ours to look at)."""
    try:
        return list((process / "fd").iterdir())
    except OSError:
        return []


def _link(fd: Path) -> str:
    """What the descriptor points at ('' when it was closed meanwhile: a busy process's threads open
    and close files all the time, and one closed file must not hide the socket listed after it)."""
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def command_line(pid: int) -> str:
    """The process's arguments joined by spaces ('' when it is gone or cannot be read)."""
    return " ".join(arguments(pid))


def arguments(pid: int) -> list[str]:
    """The process's arguments (none when it is gone or cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``port`` at ``host`` (probed as a server binds, with SO_REUSEADDR)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def holder_of(port: int) -> str:
    """Who listens on ``port``, as far as this user can see: for an error message."""
    found = listener(port)
    if found is None:
        return "another program (one this user cannot see)"
    command = " ".join(found["command"].split())  # one line, whatever its arguments hold
    return f"pid {found['pid']} ({command[:200]}{'…' if len(command) > 200 else ''})"
