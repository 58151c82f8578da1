"""Stopping `railyard worker` with one SIGTERM, as a service manager or `kill` does, while it runs
a deployment run: a real Prefect server, the real CLI in subprocesses, a real retrain run (held in
its canary's bake, so that it is mid-release). Everything the worker started stops, and the run's
release is concluded as docs/release.md says for a crashed run."""

import os
import signal
import subprocess
import sys

import pytest

from railyard.processes import descendants, process_alive
from tests.support.release_world import World

pytestmark = pytest.mark.slow
GRACE_S = 10  # RAILYARD_WORKER_STOP_GRACE_S, short: how long the run may take to conclude itself


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_server):
    world = World(tmp_path_factory.mktemp("worker"), prefect_server)
    world.railyard("deploy")
    _, daily = world.api("GET", "/deployments/name/retrain/daily")
    for schedule in daily["schedules"]:  # no 03:00 run may reach this worker, whatever the time of day
        assert world.api("PATCH", f"/deployments/{daily['id']}/schedules/{schedule['id']}", {"active": False})[0] == 204
    # The long-lived servers a run would otherwise start: later runs reuse them, no worker owns them.
    world.railyard("serve", "--background")
    world.railyard("online-store", "start")
    yield world
    world.stop_services()


def test_one_sigterm_stops_the_worker_and_its_run_and_the_release_is_concluded(world, webhook):
    flow_run_id = world.start_deployment_run({"data_dir": str(world.data(1)), "epochs": 2})
    env = {
        "RAILYARD_BAKE_S": "3600",  # the run waits in its canary's bake, holding the release lock
        "RAILYARD_WORKER_STOP_GRACE_S": str(GRACE_S),
        "RAILYARD_WEBHOOK_URL": os.environ["RAILYARD_WEBHOOK_URL"],  # the world's env predates the fixture
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli", "worker"],
        env=world.env | env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=world.root,
    )
    tree: list[dict] = []
    try:
        world.wait_for(lambda: world.stage(1) == "staging", "version 1 to bake as canary", worker)
        tree = descendants(worker.pid)  # Prefect's worker, and the process of the run below it
        assert len(tree) >= 2, tree

        os.kill(worker.pid, signal.SIGTERM)
        worker.wait(timeout=GRACE_S + 30)
        assert [process["pid"] for process in tree if process_alive(process)] == []  # once it ended, nothing runs
        assert worker.returncode == 128 + signal.SIGTERM
    finally:  # whatever is left of what this test started
        for process in tree:
            if process_alive(process):
                os.kill(process["pid"], signal.SIGKILL)
        if worker.poll() is None:
            worker.kill()
        output = worker.communicate(timeout=60)[0]
    assert "Received SIGTERM" in output  # Prefect's worker was stopped, not left behind

    state = world.flow_run(flow_run_id)["state"]
    assert state["type"] == "CRASHED", state
    ended = world.history(1)[-1]
    assert (ended["stage"], ended["actor"]) == ("rejected", "railyard") and ended["reason"].startswith("crashed:")
    assert world.mlflow().get_run(world.tags(1)["railyard.mlflow_run_id"]).info.status == "FAILED"
    assert world.served_versions() == set()  # the canary was unloaded
    assert [(m["event"], m.get("version"), m.get("ending")) for m in webhook][:1] == [("rejected", 1, "crashed")]
    assert world.status()["repaired"] == []  # concluded already, by the run itself
