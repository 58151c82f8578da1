"""Who a process is, recorded so that a later process can tell whether it is still alive.

A pid alone is not enough: pids are reused. The process's start time (``/proc/<pid>/stat``,
field 22, clock ticks since boot) together with the pid and host names exactly one process.
"""

from __future__ import annotations

import os
import socket
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
        if not process.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (process / "fd").iterdir()):
                return {"pid": int(process.name), "command": command_line(int(process.name))}
        except OSError:  # gone meanwhile, or not ours to look at
            continue
    return None


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
