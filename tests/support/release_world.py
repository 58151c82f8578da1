"""One Railyard world for end-to-end release tests: a home, a real Prefect server, the real CLI
in subprocesses (so processes can be killed), small generated data sets, and readers for MLflow,
the serving config and the Prefect API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from railyard.synthetic import generate_movielens
from tests.support import REPO_ROOT

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
            "RAILYARD_LOCAL_ONLINE_STORE_PORT": "0",
            # Each run's data set is a fresh draw, not the stream the online store was fed: it
            # cannot match, so the skew is recorded but does not stop these runs.
            "RAILYARD_MAX_SKEW_SHARE": "1",
            "RAILYARD_SMOKE_REQUESTS": "40",
            "RAILYARD_SMOKE_P95_MS": "2000",
            # Every data set here is a fresh draw: let the gate compare, but not demand progress.
            "RAILYARD_MIN_AUC_CHANGE": "-0.2",
            "RAILYARD_MAX_LOGLOSS_CHANGE_RELATIVE": "0.5",
            # Nor a lift over the fresh baseline: two epochs on 4,800 ratings scored from -0.011
            # to +0.006 over it (three draws).
            "RAILYARD_MIN_AUC_LIFT": "-1",
            # Nor absolute bounds (a draw this small sits near them): these tests are about the
            # release, not the model.
            "RAILYARD_MIN_AUC": "0",
            # Nor a window like the last one: each run's data is a fresh draw, not the next day.
            "RAILYARD_DRIFT_BLOCK": "false",
            "RAILYARD_MAX_LOGLOSS": "10",
            "PREFECT_API_URL": api_url,
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.env.pop("PREFECT_HOME", None)
        self.api_url = api_url

    def stop_services(self) -> None:
        """The background servers a run starts and leaves running: serving and the online store."""
        if not self.root.exists():  # the test stopped before its first command
            return
        self.railyard("serve", "--stop", check=False)
        self.railyard("online-store", "stop", check=False)

    def env_with(self, changes: dict | None) -> dict:
        """The world's environment with ``changes`` (a value None unsets that variable)."""
        merged = self.env | (changes or {})
        return {key: value for key, value in merged.items() if value is not None}

    def data(self, seed: int) -> Path:
        path = self.root / f"data-{seed}"
        if not path.exists():
            generate_movielens(path, users=150, movies=200, days=6, ratings_per_day=800, seed=seed)
        return path

    def next_day(self, seed: int) -> Path:
        """``data(seed)`` and one more day of ratings after it: the next daily run's data."""
        path = self.root / f"data-{seed}-next-day"
        if not path.exists():
            later = self.root / f"data-{seed}-seven-days"
            generate_movielens(later, users=150, movies=200, days=7, ratings_per_day=800, seed=seed)
            before = pl.read_csv(self.data(seed) / "ratings.csv")
            added = pl.read_csv(later / "ratings.csv").filter(
                pl.col("timestamp") > before.get_column("timestamp").max()
            )
            path.mkdir()
            pl.concat([before, added]).write_csv(path / "ratings.csv")
            shutil.copy(self.data(seed) / "movies.csv", path / "movies.csv")
        return path

    def railyard(self, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=self.env_with(env),
            capture_output=True,
            text=True,
            timeout=900,
            cwd=self.root,
        )
        if check:
            assert done.returncode == 0, done.stderr[-4000:]
        return done

    def start_run(self, seed: int, *extra: str, env: dict | None = None, fault: str | None = None) -> subprocess.Popen:
        """``railyard run --data <seed> --json``; with ``fault``, through tests/support/faults.py."""
        command = [sys.executable, "-m", "tests.support.faults", fault] if fault else [sys.executable, "-m", "cli"]
        return subprocess.Popen(
            [*command, "run", "--data", str(self.data(seed)), "--json", *extra],
            env=self.env_with(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.root,
        )

    def finish(self, run: subprocess.Popen, code: int = 0) -> dict:
        stdout, stderr = run.communicate(timeout=900)
        assert run.returncode == code, stderr[-4000:]
        return json.loads(stdout.strip().splitlines()[-1]) if code == 0 else {"stderr": stderr}

    def mlflow(self):
        """A client of the world's MLflow database, made as Railyard makes one: a run creating the
        database meanwhile and this reader never migrate it at once (MLflow's migrations race)."""
        from railyard.tracking import mlflow_client

        self.home.mkdir(parents=True, exist_ok=True)
        return mlflow_client(f"sqlite:///{self.home / 'mlflow.db'}")

    def tags(self, version: int) -> dict:
        return self.mlflow().get_model_version(MODEL, str(version)).tags

    def stage(self, version: int) -> str | None:
        try:
            return self.tags(version).get("railyard.stage")
        except Exception:  # noqa: BLE001 - not registered (yet)
            return None

    def history(self, version: int) -> list[dict]:
        tags = self.tags(version)
        return [json.loads(tags[key]) for key in sorted(tags) if key.startswith("railyard.transition.")]

    def aliases(self) -> dict[str, int]:
        return {alias: int(version) for alias, version in self.mlflow().get_registered_model(MODEL).aliases.items()}

    def versions(self) -> list[int]:
        return sorted(int(v.version) for v in self.mlflow().search_model_versions(f"name = '{MODEL}'"))

    def wait_for(self, condition, what: str, run: subprocess.Popen | None = None, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if run is not None and run.poll() is not None:
                pytest.fail(f"run ended early ({run.returncode}) waiting for {what}:\n{run.stderr.read()[-4000:]}")
            if condition():
                return
            time.sleep(1)
        pytest.fail(f"timed out waiting for {what}")

    def flow_run(self, flow_run_id: str) -> dict:
        return self.api("GET", f"/flow_runs/{flow_run_id}")[1]

    def review_run(self, version: int) -> dict:
        return self.flow_run(self.tags(version)["railyard.review_run"])

    def wait_until_waiting(self, version: int, run: subprocess.Popen | None = None) -> dict:
        """The flow run that put ``version`` up for review, once it is PAUSED (paused or suspended)."""

        def waiting() -> bool:
            tags = self.tags(version) if self.stage(version) else {}
            return "railyard.review_run" in tags and self.review_run(version)["state"]["type"] == "PAUSED"

        self.wait_for(waiting, f"version {version} to await review", run)
        return self.review_run(version)

    def start_deployment_run(self, parameters: dict, deployment: str = "retrain/daily") -> str:
        """A run of a deployment, created through the API as the UI's Run button does; its id."""
        _, found = self.api("GET", f"/deployments/name/{deployment}")
        status, flow_run = self.api("POST", f"/deployments/{found['id']}/create_flow_run", {"parameters": parameters})
        assert status == 201, flow_run
        return flow_run["id"]

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.api_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def server_state(self) -> dict:
        return json.loads((self.home / "serving" / "server.json").read_text())

    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.server_state()['rest_port']}"

    def model_dir(self, version: int) -> Path:
        return self.home / "serving" / "models" / MODEL / str(version)

    def served_versions(self) -> set[int]:
        from infra.tfserving.model_config import read_config, served_versions

        return served_versions(read_config(self.home / "serving" / "models" / "models.config"), MODEL)[0]

    def status(self, env: dict | None = None) -> dict:
        return json.loads(self.railyard("status", "--json", env=env).stdout.strip().splitlines()[-1])


def predict(rest_url: str, label: str | None, instances: list[dict] | None = None) -> list:
    instances = instances or [{"userId": 6, "movieId": 1}, {"userId": 10**9, "movieId": 1}]
    body = json.dumps({"instances": instances}).encode()
    url = f"{rest_url}/v1/models/{MODEL}" + (f"/labels/{label}" if label else "") + ":predict"
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=30) as response:
        return json.loads(response.read())["predictions"]


def assert_serves_its_golden_answers(world: World, label: str, version: int) -> None:
    golden = json.loads((world.model_dir(version) / "assets.extra" / "railyard_golden.json").read_text())
    golden = golden["serving_default"]
    served = predict(world.rest_url(), label, golden["instances"])
    assert max(abs(a[0] - b[0]) for a, b in zip(served, golden["predictions"], strict=True)) < 1e-5


def kill(process: subprocess.Popen) -> None:
    """kill -9, then reap it (as a shell would), so its pid is really gone."""
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
