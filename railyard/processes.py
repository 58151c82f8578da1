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
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def process_alive(identity: dict | None) -> bool | None:
    """True or False for a process of this host; None when that cannot be known here
    (another host, no identity, no /proc)."""
    if not identity or identity.get("host") != socket.gethostname() or identity.get("start") is None:
        return None
    return _start_ticks(int(identity["pid"])) == identity["start"]


def describe(identity: dict | None) -> str:
    return f"pid {identity['pid']} on {identity['host']}" if identity else "an unknown process"
