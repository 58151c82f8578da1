"""The gray release from the flow's side: the canary's share of users follows the release, and a
canary that errors on its live traffic during the bake is rolled back automatically."""

import threading
import time

import pytest

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


def test_a_canary_over_its_error_budget_is_rolled_back_during_the_bake(gray_home, tmp_path, monkeypatch):
    from flows.retrain import retrain
    from infra.online_store import gray_release
    from infra.online_store.store import connect
    from infra.tfserving.target import serving_labels
    from railyard.errors import CanaryRolledBack
    from railyard.settings import Settings
    from tasks.deploy import serving_target
    from tasks.release import registry

    data = tmp_path / "data"
    generate_movielens(data, users=60, movies=80, days=4, ratings_per_day=300, seed=6)
    first = retrain(data_dir=str(data), auto_approve=True)
    assert first["stage"] == "production" and first["model_version"] == 1
    settings = Settings()
    client = connect(settings).client
    assert gray_release.canary_share(client, "recmodel") == 1.0  # approved: canary and stable both v1

    # A second model of the same data (another training config) bakes for 60 s; its live traffic
    # errs on 30 % of requests, as a ranking service would count them.
    monkeypatch.setenv("RAILYARD_EPOCHS", "2")
    monkeypatch.setenv("RAILYARD_BAKE_S", "60")
    monkeypatch.setenv("RAILYARD_BAKE_MIN_REQUESTS", "40")
    seen_share = []

    def canary_traffic() -> None:
        deadline = time.monotonic() + 300
        while gray_release.canary_share(client, "recmodel") != 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)  # the share is 0 from the canary's load until its smoke tests pass
        seen_share.append(gray_release.canary_share(client, "recmodel"))
        for request in range(60):
            gray_release.record(client, "recmodel", "canary", 2, latency_ms=4.0, error=request % 10 < 3, score=0.5)

    traffic = threading.Thread(target=canary_traffic)
    traffic.start()
    started = time.monotonic()
    with pytest.raises(CanaryRolledBack, match=r"error rate 30.00% over the 1.00% budget.*canary v2: 60 requests"):
        retrain(data_dir=str(data), auto_approve=True)
    traffic.join()
    assert seen_share == [0.25] and time.monotonic() - started < 200  # rolled back well before the bake's end
    assert gray_release.canary_share(client, "recmodel") == 0.0
    target = serving_target(settings)
    assert serving_labels(target, "recmodel") == {"stable": 1, "canary": 1}  # canary unloaded
    with target.client() as serving:
        assert len(serving.predict_rest("recmodel", [{"userId": 6, "movieId": 1}], label="stable")) == 1
    last = registry(settings).history(2)[-1]
    assert last["stage"] == "rejected" and "rolled back during the bake: error rate 30.00%" in last["reason"]
    assert registry(settings).production_version() == 1
