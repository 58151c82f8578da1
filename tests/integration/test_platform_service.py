"""The embedded servers' one supervisor's primitives (infra/platform/service.py) with real processes,
and the split between clients that resolve endpoints and entry points that start servers."""

import sys
import time

import pytest

from infra.platform import service
from railyard.processes import identity, process_alive

# Ignores SIGTERM, and starts a grandchild (in its process group) that ignores it too.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def test_restart_delay_doubles_up_to_its_cap():
    assert [service.restart_delay_s(n, 0.5, 5.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert service.restart_delay_s(10_000, 0.5, 5.0) == 5.0  # no overflow after many restarts


def test_a_service_that_ignores_sigterm_is_killed_after_its_grace_with_what_it_started(tmp_path):
    log = tmp_path / "stubborn.log"
    child, _ = service.start_detached([sys.executable, "-c", STUBBORN], log)
    while not service.log_lines(log):
        assert child.poll() is None
    grandchild = identity(int(service.log_lines(log)[0]))
    me = identity(child.pid)
    service.stop_process(child.pid, lambda: bool(process_alive(me)), grace_s=0.5, group=True)
    assert process_alive(me) is False
    assert gone(grandchild)


def gone(process: dict) -> bool:
    """The process has ended (the kernel may take a moment to tear down a SIGKILLed one)."""
    deadline = time.monotonic() + 5
    while process_alive(process) and time.monotonic() < deadline:
        time.sleep(0.02)
    return process_alive(process) is False


def test_a_state_file_is_cleared_only_by_the_process_it_names(tmp_path):
    path = tmp_path / "svc.json"
    service.write_state(path, {"pid": 123, "port": 1})
    service.clear_state(path, 456)
    assert service.read_state(path) == {"pid": 123, "port": 1}
    service.clear_state(path, 123)
    assert service.read_state(path) is None
    path.write_text("[1, 2]")  # not a state
    assert service.read_state(path) is None


def test_resolving_the_serving_target_starts_no_server(tmp_path):
    """A client resolves endpoints; only an entry point starts the local server."""
    from infra.local_server import background
    from infra.rollout.deploy import resolve_target
    from railyard.settings import Settings

    settings = Settings(home=tmp_path, local_serving_rest_port=0, local_serving_grpc_port=0)
    try:
        assert resolve_target(settings) is None
        assert background.running(settings.local_serving_dir) is None
    finally:
        background.stop(settings.local_serving_dir)


def test_the_start_names_why_the_server_exited(tmp_path):
    log = tmp_path / "x.log"
    child, offset = service.start_detached([sys.executable, "-c", "print('no config'); raise SystemExit(3)"], log)
    with pytest.raises(RuntimeError, match=r"^exit 3: \['no config'\]$"):
        service.wait_started(
            child,
            lambda: None,
            timeout_s=60,
            exited=lambda c: RuntimeError(f"exit {c.returncode}: {service.log_lines(log, offset)}"),
            timed_out=TimeoutError,
        )
