"""The supervisor process of ``railyard up``: it runs a home's services from a spec file, in stages; restarts one that dies (capped backoff, counted, logged); and
on SIGTERM or SIGINT stops them all, last started first, by their recorded pids.

The spec (JSON, written by the entry point) lists services, each in a stage: a stage's services
start together once the stages before are healthy::

    {"folder": ".../platform", "restart_base_s": 1, "restart_cap_s": 30, "stop_grace_s": 15,
     "start_timeout_s": 300,
     "services": [{"name": "postgres", "command": [...], "env": {...}, "cwd": null, "user": null,
                   "port": 5432, "url": "http://...", "health": {"http": url} | {"tcp": port} | null,
                   "once": false, "stop_signal": "SIGTERM", "stage": 0}, ...]}

A service with ``once`` runs to completion (a registration): exit 0 is done, another exit is
retried like a crash. Each service's state file (``services/<name>.json`` in the folder) holds its
pid and process identity, port, URL, start time, restarts and last exit; ``railyard ps`` reads
them. A service that dies before it was ever healthy is marked ``failed`` (with its log's last
lines) and the supervisor stops everything: ``railyard up`` reports why.

Run as ``python -m infra.platform.supervisor SPEC``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import infra.platform.service as service
from railyard.processes import current_process, identity, process_alive

log = logging.getLogger("railyard.platform")

SUPERVISOR_FILE = "supervisor.json"
SERVICES = "services"
LOGS = "logs"
POLL_S = 0.2
LOG_TAIL = 8  # lines of a failed service's log quoted in its state


@dataclass
class Running:
    spec: dict
    folder: Path
    child: subprocess.Popen | None = None
    process: dict | None = None
    started: float = 0.0
    restarts: int = 0
    healthy_once: bool = False
    done: bool = False  # a ``once`` service that succeeded
    failed: bool = False  # it died before it was ever healthy
    restart_at: float | None = None
    last_exit: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def log_path(self) -> Path:
        return self.folder / LOGS / f"{self.name}.log"

    @property
    def state_path(self) -> Path:
        return state_path(self.folder, self.name)

    def start(self) -> None:
        env = os.environ | self.spec.get("env", {})
        child, _ = service.start_detached(
            self.spec["command"], self.log_path, env=env, cwd=self.spec.get("cwd"), user=self.spec.get("user")
        )
        self.child, self.process, self.started, self.restart_at = child, identity(child.pid), time.time(), None
        self.record("starting")

    def healthy(self) -> bool:
        return health(self.spec, self.process)

    def record(self, status: str, **extra) -> None:
        self.extra.update(extra)
        service.write_state(
            self.state_path,
            {
                "name": self.name,
                "pid": self.child.pid if self.child else None,
                "process": self.process,
                "port": self.spec.get("port"),
                "url": self.spec.get("url"),
                "health": self.spec.get("health"),
                "once": bool(self.spec.get("once")),
                "status": status,
                "started": self.started,
                "restarts": self.restarts,
                "last_exit": self.last_exit,
                "log": str(self.log_path),
                **self.extra,
            },
        )


def state_path(folder: Path, name: str) -> Path:
    return Path(folder) / SERVICES / f"{name}.json"


def health(spec: dict, process: dict | None) -> bool:
    """The service answers its health check (no check: its process lives)."""
    check = spec.get("health") or {}
    if "http" in check:
        return service.http_answers(check["http"])
    if "tcp" in check:
        return service.tcp_answers(int(check["tcp"]))
    return bool(process_alive(process))


def run(spec_path: Path) -> int:
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec["folder"])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    service.write_state(folder / SUPERVISOR_FILE, {"pid": os.getpid(), "process": current_process(), "up": False})
    services = [Running(entry, folder) for entry in spec["services"]]
    try:
        if _start_in_order(services, spec, stop):
            service.write_state(
                folder / SUPERVISOR_FILE, {"pid": os.getpid(), "process": current_process(), "up": True}
            )
            log.info("every service is up")
            while not stop.wait(POLL_S):
                for running in services:
                    _watch(running, spec)
        return 0
    finally:
        _stop_all(services, spec["stop_grace_s"])
        service.clear_state(folder / SUPERVISOR_FILE, os.getpid())
        log.info("stopped")


def _start_in_order(services: list[Running], spec: dict, stop: threading.Event) -> bool:
    """Start the services stage by stage (``stage`` in their spec, 0 first): a stage's services
    together, once every service of the stages before is healthy (a ``once`` one: done). False
    when one failed before it was ever healthy (its state says why) or a stop was asked for."""
    for stage in sorted({running.spec.get("stage", 0) for running in services}):
        starting = [running for running in services if running.spec.get("stage", 0) == stage]
        for running in starting:
            running.start()
            log.info("started %s (pid %d)", running.name, running.child.pid)
        deadline = time.monotonic() + spec["start_timeout_s"]
        while waiting := [running for running in starting if not (running.healthy_once or running.done)]:
            if stop.wait(POLL_S):
                return False
            for running in waiting:
                if not _came_up(running):
                    return False
                if time.monotonic() > deadline and not (running.healthy_once or running.done):
                    return _failed(running, f"not healthy within {spec['start_timeout_s']:g} s")
    return True


def _came_up(running: Running) -> bool:
    """Check a starting service once: False when it failed (recorded), True otherwise."""
    code = running.child.poll()
    if running.spec.get("once"):
        if code == 0:
            running.done, running.last_exit = True, 0
            running.record("done")
        elif code is not None:
            return _failed(running, f"exited with code {code}")
    elif running.healthy():
        running.healthy_once = True
        running.record("running")
        log.info("%s is healthy", running.name)
    elif code is not None:
        return _failed(running, f"exited with code {code}")
    return True


def _failed(running: Running, why: str) -> bool:
    running.last_exit, running.failed = running.child.poll(), True
    tail = service.log_lines(running.log_path)[-LOG_TAIL:]
    running.record("failed", why=why, log_tail=tail)
    log.error("%s did not start: %s; see %s", running.name, why, running.log_path)
    return False


def _watch(running: Running, spec: dict) -> None:
    """Restart a service that died (after its backoff); record a restart once it is up again."""
    if running.done:
        return
    now = time.monotonic()
    if running.restart_at is not None:
        if now >= running.restart_at:
            running.restarts += 1
            running.start()
            log.warning("restarted %s (restart %d, pid %d)", running.name, running.restarts, running.child.pid)
        return
    code = running.child.poll()
    if code is None:
        return
    if running.spec.get("once") and code == 0:
        running.done, running.last_exit = True, 0
        running.record("done")
        return
    running.last_exit = code
    service.kill_group(running.child.pid)  # what it started must not hold its port against the restart
    delay = service.restart_delay_s(running.restarts, spec["restart_base_s"], spec["restart_cap_s"])
    running.restart_at = now + delay
    running.record("restarting")
    log.warning(
        "%s (pid %d) exited with code %s: restart %d in %.1f s",
        running.name,
        running.child.pid,
        code,
        running.restarts + 1,
        delay,
    )


def _stop_all(services: list[Running], grace_s: float) -> None:
    for running in reversed(services):
        if running.child is None:
            continue
        process = running.process
        if running.child.poll() is None:
            service.stop_process(
                running.child.pid,
                lambda p=process: bool(process_alive(p)),
                grace_s,
                group=True,
                signum=getattr(signal, running.spec.get("stop_signal", "SIGTERM")),
            )
            log.info("stopped %s (pid %d)", running.name, running.child.pid)
        service.kill_group(running.child.pid)
        if not running.failed:  # a failed one's state says why, for `railyard up` to report
            running.state_path.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
