"""The whole release through the real CLI against a real Prefect server and the local TF Serving.

One world for the module, in order: deployments registered; run 1 started through the API (as
the UI's Run button does), picked up by a worker and auto-approved to production; run 2 pauses
and is approved with `railyard approve`; run 3 is rejected; run 4 times out; then rollbacks.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from railyard.synthetic import generate_movielens
from tests.prefect_server import prefect_server  # noqa: F401 - session fixture

pytestmark = pytest.mark.slow
MODEL = "recmodel"


class World:
    def __init__(self, root: Path, api_url: str):
        self.root = root
        self.home = root / "home"
        self.env = os.environ | {
            "RAILYARD_HOME": str(self.home),
            "RAILYARD_EPOCHS": "2",
            "RAILYARD_LOCAL_SERVING_REST_PORT": "0",
            "RAILYARD_LOCAL_SERVING_GRPC_PORT": "0",
            "RAILYARD_SMOKE_REQUESTS": "40",
            "RAILYARD_SMOKE_P95_MS": "2000",
            # Every data set here is a fresh draw: let the gate compare, but not demand progress.
            "RAILYARD_MIN_AUC_CHANGE": "-0.2",
            "RAILYARD_MAX_LOGLOSS_CHANGE_RELATIVE": "0.5",
            "PREFECT_API_URL": api_url,
        }
        self.env.pop("PREFECT_HOME", None)
        self.api_url = api_url

    def data(self, seed: int) -> Path:
        path = self.root / f"data-{seed}"
        if not path.exists():
            generate_movielens(path, users=150, movies=200, days=6, ratings_per_day=800, seed=seed)
        return path

    def railyard(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "railyard", *args], env=self.env | (env or {}), capture_output=True, text=True,
            timeout=900, cwd=self.root,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, done.stderr[-4000:]
        return done

    def start_run(self, seed: int, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "railyard", "run", "--data", str(self.data(seed)), "--json"],
            env=self.env | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=self.root,
        )  # fmt: skip

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(f"sqlite:///{self.home / 'mlflow.db'}")

    def tags(self, version: int) -> dict:
        return self.mlflow().get_model_version(MODEL, str(version)).tags

    def history(self, version: int) -> list[dict]:
        tags = self.tags(version)
        return [json.loads(tags[key]) for key in sorted(tags) if key.startswith("railyard.transition.")]

    def aliases(self) -> dict[str, int]:
        return {alias: int(version) for alias, version in self.mlflow().get_registered_model(MODEL).aliases.items()}

    def wait_for_stage(self, version: int, stage: str, run: subprocess.Popen, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if run.poll() is not None:
                pytest.fail(f"run ended early ({run.returncode}):\n{run.stderr.read()[-4000:]}")
            try:
                if self.tags(version).get("railyard.stage") == stage:
                    return
            except Exception:  # noqa: BLE001 - the version is not registered yet
                pass
            time.sleep(2)
        pytest.fail(f"version {version} never reached {stage}")

    def flow_run_state(self, version: int) -> str:
        flow_run_id = self.tags(version)["railyard.prefect_flow_run_id"]
        with urllib.request.urlopen(f"{self.api_url}/flow_runs/{flow_run_id}", timeout=10) as response:
            return json.loads(response.read())["state"]["type"]

    def finish(self, run: subprocess.Popen) -> dict:
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr[-4000:]
        return json.loads(stdout.strip().splitlines()[-1])

    def rest_url(self) -> str:
        return f"http://127.0.0.1:{json.loads((self.home / 'serving' / 'server.json').read_text())['rest_port']}"

    def model_dir(self, version: int) -> Path:
        return self.home / "serving" / "models" / MODEL / str(version)

    def served_versions(self) -> set[int]:
        from infra.tfserving_config import read_config, served_versions

        return served_versions(read_config(self.home / "serving" / "models" / "models.config"), MODEL)[0]

    def status(self) -> dict:
        return json.loads(self.railyard("status", "--json").stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_server):  # noqa: F811 - the imported fixture
    world = World(tmp_path_factory.mktemp("release"), prefect_server)
    yield world
    world.railyard("serve", "--stop", check=False)


def _predict(rest_url: str, label: str | None, instances: list[dict] | None = None) -> list:
    instances = instances or [{"userId": 6, "movieId": 1}, {"userId": 10**9, "movieId": 1}]
    body = json.dumps({"instances": instances}).encode()
    url = f"{rest_url}/v1/models/{MODEL}" + (f"/labels/{label}" if label else "") + ":predict"
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as response:
        return json.loads(response.read())["predictions"]


def api(world: World, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{world.api_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_deploy_registers_every_deployment_with_schedule_and_typed_parameters(world):
    world.railyard("deploy")
    status, daily = api(world, "GET", "/deployments/name/retrain/daily")
    assert status == 200
    (schedule,) = daily["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 3 * * *", "Europe/Berlin")
    assert daily["enforce_parameter_schema"] is True and daily["global_concurrency_limit"]["limit"] == 1
    assert daily["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    properties = daily["parameter_openapi_schema"]["properties"]
    assert set(properties) == {"data_dir", "holdout_fraction", "epochs", "auto_approve"}
    assert properties["auto_approve"]["default"] is False and "reviewer" in properties["auto_approve"]["description"]
    for name in ("promote/promote", "rollback/rollback"):
        assert api(world, "GET", f"/deployments/name/{name}")[0] == 200

    status, error = api(world, "POST", f"/deployments/{daily['id']}/create_flow_run", {"parameters": {"holdout_fraction": 2}})
    assert status == 409 and "holdout_fraction" in json.dumps(error)

    # The server's scheduler turns the cron into runs: the daily retraining really happens.
    scheduled = _scheduled_runs(world, daily["id"], wait_s=120)
    starts = [datetime.fromisoformat(run["expected_start_time"]).astimezone(ZoneInfo("Europe/Berlin")) for run in scheduled]
    assert starts and all((start.hour, start.minute) == (3, 0) for start in starts)
    assert all(run["auto_scheduled"] and run["parameters"] == {"auto_approve": False} for run in scheduled)

    # Switched off (the UI's schedule toggle), the coming runs go: none can reach the worker that
    # the next test starts, whatever the time of day.
    assert api(world, "PATCH", f"/deployments/{daily['id']}/schedules/{schedule['id']}", {"active": False})[0] == 204
    assert _scheduled_runs(world, daily["id"]) == []


def _scheduled_runs(world: World, deployment_id: str, wait_s: float = 0) -> list[dict]:
    """The deployment's SCHEDULED runs, waiting up to ``wait_s`` for the scheduler service to
    make some (it runs on every deployment change and then once a minute)."""
    query = {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
    }
    deadline = time.monotonic() + wait_s
    while True:
        status, runs = api(world, "POST", "/flow_runs/filter", query)
        assert status == 200, runs
        if runs or time.monotonic() >= deadline:
            return runs
        time.sleep(2)


def test_a_ui_started_run_is_picked_up_by_a_worker_and_reaches_production(world):
    _, daily = api(world, "GET", "/deployments/name/retrain/daily")
    parameters = {"data_dir": str(world.data(1)), "auto_approve": True, "epochs": 2}
    status, flow_run = api(world, "POST", f"/deployments/{daily['id']}/create_flow_run", {"parameters": parameters})
    assert status == 201, flow_run
    world.railyard("worker", "--run-once")
    assert api(world, "GET", f"/flow_runs/{flow_run['id']}")[1]["state"]["type"] == "COMPLETED"

    assert world.aliases() == {"production": 1, "champion": 1}
    tags = world.tags(1)
    assert tags["railyard.stage"] == "production" and tags["railyard.serving_label"] == "stable"
    assert tags["railyard.prefect_flow_run_id"] == flow_run["id"] and len(tags["railyard.manifest_sha256"]) == 64
    assert [entry["stage"] for entry in world.history(1)] == ["candidate", "staging", "production"]
    status = world.status()
    assert status["serving"] == {"stable": 1, "canary": 1}
    assert status["versions"][0]["approved_by"] == "railyard (auto_approve)"
    run = world.mlflow().get_run(tags["railyard.mlflow_run_id"])
    assert run.data.metrics["smoke_passed"] == 1.0 and "smoke_latency_p95_ms" in run.data.metrics

    scores = _predict(world.rest_url(), "stable")  # what the run's curl line does
    assert len(scores) == 2 and all(0 < score[0] < 1 for score in scores)


def test_second_run_pauses_for_approval_and_the_cli_approves_it(world):
    run = world.start_run(2)
    world.wait_for_stage(2, "staging", run)
    deadline = time.monotonic() + 120
    while world.flow_run_state(2) != "PAUSED" and time.monotonic() < deadline:
        time.sleep(1)
    assert world.flow_run_state(2) == "PAUSED"
    assert world.status()["serving"] == {"stable": 1, "canary": 2}  # the canary serves beside stable
    rest_url = world.rest_url()
    for label, version in (("stable", 1), ("canary", 2)):  # by label, each version's own answers
        golden = json.loads((world.model_dir(version) / "assets.extra" / "railyard_golden.json").read_text())
        served = _predict(rest_url, label, golden["instances"])
        assert max(abs(a[0] - b[0]) for a, b in zip(served, golden["predictions"], strict=True)) < 1e-5
    # A SparrowRecSys-style client names no version: TF Serving answers with the newest served one.
    assert len(_predict(rest_url, None, [{"userId": 6, "movieId": 1}, {"userId": 7, "movieId": 2}])) == 2

    world.railyard("approve", "2", "--reviewer", "alice", "--comment", "looks good")
    summary = world.finish(run)
    assert summary["stage"] == "production" and summary["gate"]["baseline_version"] == 1
    assert world.aliases() == {"production": 2, "champion": 2}
    assert world.tags(1)["railyard.stage"] == "archived"
    promoted = world.history(2)[-1]
    assert (promoted["stage"], promoted["actor"], promoted["reason"]) == ("production", "alice", "looks good")
    assert promoted["flow_run_id"] == world.tags(2)["railyard.prefect_flow_run_id"]
    assert world.history(1)[-1]["reason"] == "replaced by version 2"
    assert world.flow_run_state(2) == "COMPLETED"


def test_a_rejected_canary_is_unloaded_and_stable_keeps_serving(world):
    run = world.start_run(3)
    world.wait_for_stage(3, "staging", run)
    while world.flow_run_state(3) != "PAUSED":
        time.sleep(1)
    world.railyard("reject", "3", "--reviewer", "bob", "--comment", "odd scores for new users")
    summary = world.finish(run)
    assert summary["stage"] == "rejected" and summary["serving"]["labels"] == {"stable": 2, "canary": 2}
    rejected = world.history(3)[-1]
    assert (rejected["stage"], rejected["actor"], rejected["reason"]) == ("rejected", "bob", "odd scores for new users")
    assert world.aliases()["production"] == 2
    assert world.served_versions() == {2}  # the rejected canary is unloaded
    assert len(_predict(summary["serving"]["rest"], "stable")) == 2


def test_no_answer_within_the_timeout_rejects_the_canary(world):
    run = world.start_run(4, env={"RAILYARD_APPROVAL_TIMEOUT_S": "5"})
    summary = world.finish(run)
    assert summary["stage"] == "rejected" and summary["serving"]["labels"] == {"stable": 2, "canary": 2}
    assert world.history(4)[-1]["reason"] == "no approval within 5 s"
    assert world.served_versions() == {2}


def test_a_canary_failing_its_smoke_tests_is_rolled_back_by_the_flow(world):
    # A latency budget no server can meet: every other check passes, the burst fails.
    run = world.start_run(5, env={"RAILYARD_SMOKE_P95_MS": "0.001"})
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 2 and "FAIL latency_burst" in stderr and "FAIL golden" not in stderr
    rejected = world.history(5)[-1]
    assert rejected["stage"] == "rejected" and rejected["actor"] == "railyard"
    assert rejected["reason"].startswith("smoke tests failed: latency_burst:") and "golden" not in rejected["reason"]
    assert world.flow_run_state(5) == "FAILED"
    assert world.served_versions() == {2}  # the canary is unloaded
    assert world.aliases()["production"] == 2
    assert world.status()["serving"] == {"stable": 2, "canary": 2}
    golden = json.loads((world.model_dir(2) / "assets.extra" / "railyard_golden.json").read_text())
    served = _predict(world.rest_url(), "stable", golden["instances"])
    assert max(abs(a[0] - b[0]) for a, b in zip(served, golden["predictions"], strict=True)) < 1e-5


def test_rollback_restores_the_previous_production_version_and_refuses_others(world):
    refused = world.railyard("rollback", "--to", "3", check=False)
    assert refused.returncode == 2 and "rejected" in refused.stderr
    missing = world.railyard("rollback", "--to", "99", check=False)
    assert missing.returncode == 2 and "99" in missing.stderr

    world.railyard("rollback", "--reason", "complaints about v2", "--actor", "carol")
    assert world.aliases() == {"production": 1, "champion": 1}
    assert world.tags(2)["railyard.stage"] == "archived"
    restored = world.history(1)[-1]
    assert (restored["stage"], restored["actor"]) == ("production", "carol")
    assert "complaints about v2" in restored["reason"]
    assert world.status()["serving"]["stable"] == 1
    # The whole story, on both versions' transition histories.
    assert [entry["stage"] for entry in world.history(1)] == ["candidate", "staging", "production", "archived", "production"]
    assert [entry["stage"] for entry in world.history(2)] == ["candidate", "staging", "production", "archived"]
    assert world.history(2)[-1]["actor"] == "carol"
