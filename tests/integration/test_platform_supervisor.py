"""The platform's supervisor (infra/platform/supervisor.py) and `railyard down` with small real
services: stages, a one-shot step, a service killed with SIGKILL restarted and counted, a
service that never comes up reported from its log, and `down` after the supervisor itself was
killed stopping what it left, by the recorded pids. The real platform: tests/e2e/test_platform_up.py."""

import json
import os
import signal
import sys
import time

import pytest

import infra.platform.service as service
from cli import platform_up
from infra.platform import supervisor
from railyard.processes import identity, process_alive
from railyard.settings import Settings
from tests.support.s3_server import free_port

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def http_service(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def start(home, services: list[dict]):
    where = home / "platform"
    spec = {
        "folder": str(where),
        "restart_base_s": 0.2,
        "restart_cap_s": 1.0,
        "stop_grace_s": 5,
        "start_timeout_s": 60,
        "services": services,
    }
    where.mkdir(parents=True)
    (where / platform_up.SPEC_FILE).write_text(json.dumps(spec))
    child, _ = service.start_detached(
        [sys.executable, "-m", "infra.platform.supervisor", str(where / platform_up.SPEC_FILE)],
        where / platform_up.SUPERVISOR_LOG,
    )
    return child


def wait_for(condition, what: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def rows(settings) -> dict[str, dict]:
    return {row["name"]: row for row in platform_up.ps(settings)}


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    platform_up.down(Settings(home=tmp_path))


def test_a_killed_service_is_restarted_and_counted_and_down_leaves_no_process(home):
    port = free_port()
    settings = Settings(home=home)
    child = start(
        home,
        [
            {
                "name": "web",
                "stage": 0,
                "command": http_service(port),
                "port": port,
                "health": {"http": f"http://127.0.0.1:{port}/"},
            },
            {"name": "setup", "stage": 1, "command": [sys.executable, "-c", "print('done')"], "once": True},
            {"name": "sleeper", "stage": 1, "command": SLEEPER},
        ],
    )
    wait_for(lambda: (platform_up.supervisor_state(settings) or {}).get("up"), "the platform to be up")
    before = rows(settings)
    assert {name: row["health"] for name, row in before.items()} == {
        "web": "healthy",
        "setup": "done",
        "sleeper": "healthy",
    }
    killed = identity(before["web"]["pid"])

    os.kill(killed["pid"], signal.SIGKILL)
    after = wait_for(
        lambda: (r := rows(settings))["web"]["restarts"] == 1 and r["web"]["health"] == "healthy" and r, "a restart"
    )
    assert after["web"]["pid"] != killed["pid"] and after["web"]["port"] == port
    assert f"web (pid {killed['pid']}) exited with code -9: restart 1" in (home / "platform/supervisor.log").read_text()

    running = [identity(row["pid"]) for row in after.values() if row["pid"]] + [identity(child.pid)]
    assert platform_up.down(settings) == [
        f"stopped the platform's supervisor (pid {child.pid} on {killed['host']}) and its services"
    ]
    child.wait(timeout=5)
    assert [process for process in running if process_alive(process)] == []
    assert platform_up.ps(settings) == []


def test_down_stops_what_a_killed_supervisor_left_by_the_recorded_pids(home):
    settings = Settings(home=home)
    child = start(home, [{"name": "sleeper", "stage": 0, "command": SLEEPER}])
    wait_for(lambda: (platform_up.supervisor_state(settings) or {}).get("up"), "the platform to be up")
    sleeper = identity(rows(settings)["sleeper"]["pid"])
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    said = platform_up.down(settings)
    assert said == [f"stopped sleeper (pid {sleeper['pid']} on {sleeper['host']}), left by a supervisor that was gone"]
    assert process_alive(sleeper) is False


def test_a_service_that_does_not_come_up_is_reported_from_its_log_and_everything_stops(home):
    settings = Settings(home=home)
    child = start(
        home,
        [
            {"name": "sleeper", "stage": 0, "command": SLEEPER},
            {
                "name": "broken",
                "stage": 1,
                "command": [sys.executable, "-c", "import sys; sys.exit('FATAL: no config')"],
            },
        ],
    )
    child.wait(timeout=60)
    why = platform_up._why_not_up(settings, home / "platform" / platform_up.SUPERVISOR_LOG, 0)
    assert why.startswith("broken did not start (exited with code 1): FATAL: no config (log: ")
    assert platform_up._live_services(settings) == []  # the sleeper was stopped with it
    assert supervisor.health({"health": {"tcp": free_port()}}, None) is False


def test_ports_are_the_recorded_or_usual_ones_while_free_else_free_ones_and_a_set_one_taken_is_refused(tmp_path):
    import socket

    from railyard.errors import PortTaken

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        recorded = free_port()
        ports = platform_up.choose_ports(
            Settings(home=tmp_path, platform_usual_ports=False), {"prefect": recorded, "mlflow": taken}
        )
        assert ports["prefect"] == recorded  # an earlier up's port, still free
        assert ports["mlflow"] != taken  # another home (or program) holds it: a free one
        assert len(set(ports.values())) == len(ports) == len(platform_up.PORT_NAMES)
        with pytest.raises(
            PortTaken, match=f"port {taken} \\(RAILYARD_LOCAL_ONLINE_STORE_PORT\\) is taken by pid {os.getpid()}"
        ):
            platform_up.choose_ports(Settings(home=tmp_path, local_online_store_port=taken), {})


def test_up_in_a_home_that_cannot_be_written_is_refused(tmp_path):
    import subprocess

    from tests.support import REPO_ROOT

    (tmp_path / "file").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAILYARD_")} | {
        "RAILYARD_HOME": str(tmp_path / "file" / "home")
    }
    done = subprocess.run([sys.executable, "-m", "cli", "up"], env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: the home {tmp_path / 'file' / 'home'} is not writable: ")


def test_up_refuses_a_home_whose_online_store_was_started_alone(tmp_path):
    from infra.online_store import valkey_process
    from railyard.errors import Refused

    settings = Settings(home=tmp_path, local_online_store_port=0)
    valkey_process.ensure_valkey(settings)
    try:
        with pytest.raises(
            Refused, match="^already running outside the platform in this home: the online store; nothing was started$"
        ) as refused:
            platform_up.up(settings)
        assert refused.value.next_step.startswith("stop them (`railyard online-store stop`)")
        assert platform_up.supervisor_state(settings) is None
    finally:
        valkey_process.stop(settings)


def test_the_commands_of_a_home_that_ran_up_use_its_platforms_prefect_and_mlflow(tmp_path):
    """Not a temporary Prefect: there its runs "no longer exist", and a review would be concluded as lost."""
    import subprocess

    from railyard.settings import TRACKING_FILE
    from tests.support import REPO_ROOT

    (tmp_path / TRACKING_FILE).parent.mkdir()
    (tmp_path / TRACKING_FILE).write_text(
        json.dumps(
            {"prefect_api_url": "http://127.0.0.1:4242/api", "uri": "postgresql://railyard:pw@127.0.0.1:1/mlflow"}
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILYARD_", "PREFECT_API_URL"))}
    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from cli.common import command_settings; s = command_settings(); "
            "print(os.environ['PREFECT_API_URL'], s.resolved_tracking_uri, s.shown_tracking_uri)",
        ],
        env=env | {"RAILYARD_HOME": str(tmp_path)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.split() == [
        "http://127.0.0.1:4242/api",
        "postgresql://railyard:pw@127.0.0.1:1/mlflow",
        "postgresql://railyard:***@127.0.0.1:1/mlflow",  # as a run's summary and errors show it
    ]
    assert Settings(home=tmp_path / "other").resolved_tracking_uri.startswith("sqlite:///")
