"""The gray release from the flow's side: the canary's share of users follows the release, a
canary that errors on its live traffic during the bake is rolled back automatically, and a
release reaches every local serving replica."""

import threading
import time

import pytest

from infra.tfserving.client import ServingError
from railyard.gray_rules import user_bucket
from railyard.synthetic import generate_movielens

pytestmark = pytest.mark.slow


@pytest.fixture
def gray_home(railyard_home, monkeypatch):
    # The subject is the release, not the model: any model of this small data set passes the gate.
    for name, value in {
        "RAILYARD_EPOCHS": "1",
        "RAILYARD_MIN_ROWS": "50",
        "RAILYARD_MIN_AUC": "0",
        "RAILYARD_MAX_LOGLOSS": "10",
        "RAILYARD_MIN_AUC_CHANGE": "-1",
        "RAILYARD_MIN_AUC_LIFT": "-1",
        "RAILYARD_MAX_LOGLOSS_CHANGE_RELATIVE": "10",
        "RAILYARD_LOCAL_SERVING_REST_PORT": "0",
        "RAILYARD_LOCAL_SERVING_GRPC_PORT": "0",
        "RAILYARD_SMOKE_REQUESTS": "20",
        "RAILYARD_SMOKE_P95_MS": "2000",
        "RAILYARD_CANARY_SHARE": "0.25",
    }.items():
        monkeypatch.setenv(name, value)
    yield railyard_home
    from infra.local_server import background
    from railyard.settings import Settings

    background.stop(Settings().local_serving_dir)


class FlakyCanary:
    """A TF Serving client whose calls to the canary fail three times in ten (a canary that errs
    on a share of its live traffic); everything else goes to the real server."""

    def __init__(self, inner):
        self.inner, self.grpc_target, self.calls = inner, inner.grpc_target, 0

    def label_version(self, model, label):
        return self.inner.label_version(model, label)

    def predict_grpc_versioned(self, model, columns, version=None, label=None, signature_name="serving_default"):
        if label == "canary":
            self.calls += 1
            if self.calls % 10 in (1, 2, 3):
                raise ServingError("Predict failed: INTERNAL: injected canary failure", code="INTERNAL")
        return self.inner.predict_grpc_versioned(model, columns, version, label, signature_name)


def test_a_canary_over_its_error_budget_is_rolled_back_during_the_bake(gray_home, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from flows.retrain import retrain
    from infra.online_store import gray_state
    from infra.online_store.store import connect
    from infra.ranking import create_app
    from infra.tfserving.target import serving_labels
    from railyard.errors import CanaryRolledBack
    from railyard.settings import Settings
    from release.state import registry
    from tasks.serving import serving_target

    data = tmp_path / "data"
    generate_movielens(data, users=60, movies=80, days=4, ratings_per_day=300, seed=6)
    first = retrain(data_dir=str(data), auto_approve=True)
    assert first["stage"] == "production" and first["model_version"] == 1
    settings = Settings()
    client = connect(settings).client
    assert gray_state.canary_share(client, "recmodel") == 1.0  # approved: canary and stable both v1

    # A second model of the same data (another training config) bakes for 60 s. A ranking service
    # sends it the canary's users; 30 % of its calls to the canary fail (injected), and stable
    # answers those users instead.
    monkeypatch.setenv("RAILYARD_EPOCHS", "2")
    monkeypatch.setenv("RAILYARD_BAKE_S", "60")
    monkeypatch.setenv("RAILYARD_BAKE_MIN_REQUESTS", "40")
    canary_users = [user for user in range(1, 61) if user_bucket(user) < 0.25]
    seen_share, answers = [], []

    def canary_traffic() -> None:
        deadline = time.monotonic() + 300
        while gray_state.canary_share(client, "recmodel") != 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)  # the share is 0 from the canary's load until its smoke tests pass
        seen_share.append(gray_state.canary_share(client, "recmodel"))
        with serving_target(settings).clients(attempts=1) as clients:
            app = create_app(connect(settings), [FlakyCanary(client) for client in clients], "recmodel")
            with TestClient(app) as service:
                for request in range(60):
                    user = canary_users[request % len(canary_users)]
                    body = {"instances": [{"userId": user, "movieId": 1}]}
                    answers.append(service.post("/v1/score", json=body).json())

    traffic = threading.Thread(target=canary_traffic)
    traffic.start()
    started = time.monotonic()
    with pytest.raises(CanaryRolledBack, match=r"error rate 30.00% over the 1.00% budget.*canary v2: 60 requests"):
        retrain(data_dir=str(data), auto_approve=True)
    traffic.join()
    assert seen_share == [0.25] and time.monotonic() - started < 200  # rolled back well before the bake's end
    assert gray_state.canary_share(client, "recmodel") == 0.0
    assert len(answers) == 60 and all(len(answer["predictions"]) == 1 for answer in answers)
    assert [answer["label"] for answer in answers].count("stable") == 18  # the failed canary calls
    target = serving_target(settings)
    assert serving_labels(target, "recmodel") == {"stable": 1, "canary": 1}  # canary unloaded
    with target.client() as serving:
        assert len(serving.predict_rest("recmodel", [{"userId": 6, "movieId": 1}], label="stable")) == 1
    last = registry(settings).history(2)[-1]
    assert last["stage"] == "rejected" and "rolled back during the bake: error rate 30.00%" in last["reason"]
    assert registry(settings).production_version() == 1


def test_a_release_lands_on_every_local_replica_and_serve_stop_stops_them(gray_home, tmp_path):
    """`railyard serve --replicas 2 --background`, then a daily run: the flow finds both local
    servers, and the version is `stable` on each; `serve --stop` stops both."""
    from typer.testing import CliRunner

    from cli.main import app
    from flows.retrain import retrain
    from infra.local_server import background
    from infra.rollout.deploy import local_replica_dir
    from railyard.settings import Settings
    from tasks.serving import serving_target

    settings = Settings()
    runner = CliRunner()
    try:
        started = runner.invoke(app, ["serve", "--replicas", "2", "--background"])
        assert started.exit_code == 0, started.output
        assert "local replica-1 pid" in started.output and "local server pid" in started.output

        data = tmp_path / "data"
        generate_movielens(data, users=60, movies=80, days=4, ratings_per_day=300, seed=6)
        assert retrain(data_dir=str(data), auto_approve=True)["model_version"] == 1
        target = serving_target(settings)
        assert len(target.replicas) == 2
        request = [{"userId": 6, "movieId": 1}, {"userId": 7, "movieId": 3}]
        with target.clients(attempts=1) as clients:
            assert [client.label_version("recmodel", "stable") for client in clients] == [1, 1]
            first, second = (client.predict_rest("recmodel", request, label="stable") for client in clients)
        assert first == second and len(first) == 2

        stopped = runner.invoke(app, ["serve", "--stop"])
        assert stopped.exit_code == 0 and "stopped local replica-1" in stopped.output, stopped.output
        assert background.running(local_replica_dir(settings, 0)) is None
        assert background.running(local_replica_dir(settings, 1)) is None
    finally:
        background.stop(local_replica_dir(settings, 1))
