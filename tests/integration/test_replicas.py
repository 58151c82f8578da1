"""Two serving replicas on one model root: a release lands on both, or on neither."""

import os
import time

import pytest

from infra.local_server import background, core
from infra.rollout import deploy, smoke
from infra.tfserving.client import ModelLoadError, ServingUnavailableError
from infra.tfserving.protocol import CONFIG_FILE
from infra.tfserving.target import Replica, ServingTarget
from model_registry import open_store
from railyard import contract
from railyard.configs import SmokeBudget
from railyard.processes import current_process
from railyard.settings import Settings
from tests.support.serving_fixtures import GOLDEN_INSTANCES, MODEL_NAME, assert_scores_of

pytest_plugins = ["tests.support.serving_fixtures"]

FAST = SmokeBudget(p95_ms=5_000, requests=10, concurrency=2, tolerance=1e-5)


@pytest.fixture
def world(tmp_path, model_root, start_server):
    """A store holding good versions 1 and 2; two empty live servers on one model root and config."""
    store = open_store((tmp_path / "store").as_uri())
    for number in (1, 2):
        metadata = {"data_fingerprint": f"d{number}", "code_version": "c"}
        assert store.publish(MODEL_NAME, model_root / MODEL_NAME / str(number), metadata=metadata).version == number
    serving_root = tmp_path / "serving"
    serving_root.mkdir()
    servers = [start_server(config_path=serving_root / CONFIG_FILE) for _ in range(2)]
    target = ServingTarget(
        servers[0].grpc_target,
        servers[0].rest_url,
        serving_root,
        str(serving_root),
        other_replicas=(Replica(servers[1].grpc_target, servers[1].rest_url),),
    )
    with target.clients(timeout_s=20, attempts=1) as clients:
        deploy.materialize(store, MODEL_NAME, 1, target)
        deploy.make_stable(clients[0], target, MODEL_NAME, 1, timeout_s=60)
        deploy.materialize(store, MODEL_NAME, 2, target)
        yield target, clients, servers


def assert_serving_stable_only(clients, model_root) -> None:
    for client in clients:
        assert client.label_version(MODEL_NAME, "stable") == 1
        assert client.label_version(MODEL_NAME, "canary") == 1
        deadline = time.monotonic() + 30  # a load the rollback overtook finishes, then unloads
        while (states := {s.version: s.state for s in client.model_status(MODEL_NAME)}).get(2, "END") != "END":
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        assert states[1] == "AVAILABLE"
        assert_scores_of(1, client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, label="stable"), model_root)


def test_a_healthy_release_lands_on_every_replica(world, model_root):
    target, clients, _ = world
    assert deploy.deploy_canary(clients[0], target, MODEL_NAME, 2, timeout_s=60) == {"stable": 1, "canary": 2}
    for client in clients:
        assert (client.label_version(MODEL_NAME, "stable"), client.label_version(MODEL_NAME, "canary")) == (1, 2)
        assert_scores_of(2, client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, label="canary"), model_root)

    golden = contract.read_golden(target.model_root / MODEL_NAME / "2")
    served = contract.read_contract(target.model_root / MODEL_NAME / "2")
    report = smoke.run_smoke_tests(clients, MODEL_NAME, 2, golden, FAST, label="canary", served=served)
    assert report.passed, report.summary()
    names = [check.name for check in report.checks]
    assert len(names) == 2 * 11 and len(set(names)) == len(names)
    assert {name.split("@")[1] for name in names} == {client.grpc_target for client in clients}
    assert report.requests == 2 * FAST.requests and report.errors == 0

    assert deploy.make_stable(clients[0], target, MODEL_NAME, 2, timeout_s=60) == {"stable": 2, "canary": 2}
    for client in clients:
        assert client.label_version(MODEL_NAME, "stable") == 2
        assert_scores_of(2, client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, label="stable"), model_root)


def test_a_version_that_fails_to_load_on_one_replica_gets_no_label_on_either(world, model_root, monkeypatch):
    target, clients, servers = world
    before = target.config_path.read_text()
    real = core.Servable

    def broken_on_the_second(path, on_warmup):  # a disk error on the second replica's host only
        if on_warmup == servers[1].metrics.record_warmup and os.path.basename(path) == "2":
            raise OSError("read error on replica 2")
        return real(path, on_warmup)

    monkeypatch.setattr(core, "Servable", broken_on_the_second)
    with pytest.raises(ModelLoadError, match=f"failed to load on {servers[1].grpc_target}") as failed:
        deploy.deploy_canary(clients[0], target, MODEL_NAME, 2, timeout_s=60)
    assert "the known-good config was sent again to every replica" in failed.value.__notes__
    assert target.config_path.read_text() == before
    assert_serving_stable_only(clients, model_root)


def test_a_replica_that_is_down_fails_the_release_and_the_others_keep_stable(world, model_root):
    target, clients, servers = world
    before = target.config_path.read_text()
    servers[1].stop()
    with pytest.raises(ServingUnavailableError, match=servers[1].grpc_target) as failed:
        deploy.deploy_canary(clients[0], target, MODEL_NAME, 2, timeout_s=60)
    assert "the known-good config was sent again to 1 of 2 replicas" in failed.value.__notes__
    assert target.config_path.read_text() == before
    assert_serving_stable_only(clients[:1], model_root)


def test_configured_replicas_need_as_many_grpc_as_rest_endpoints(tmp_path):
    settings = Settings(home=tmp_path, serving_grpc="a:8500, b:8500", serving_rest="http://a:8501,http://b:8501")
    target = deploy.resolve_target(settings)
    assert [(r.grpc, r.rest) for r in target.replicas] == [("a:8500", "http://a:8501"), ("b:8500", "http://b:8501")]
    assert (target.grpc, target.rest) == ("a:8500", "http://a:8501")
    with pytest.raises(ValueError, match="RAILYARD_SERVING_GRPC and RAILYARD_SERVING_REST must list the same number"):
        Settings(home=tmp_path, serving_grpc="a:8500,b:8500", serving_rest="http://a:8501")


def test_resolve_target_finds_every_running_local_replica(tmp_path, start_server):
    settings = Settings(home=tmp_path)
    config_path = settings.resolved_serving_model_root / CONFIG_FILE
    settings.resolved_serving_model_root.mkdir(parents=True)
    servers = [start_server(config_path=config_path) for _ in range(2)]
    # Replica 0 where it always was, replica 2 beside it; replica 1's folder is left by a stopped one.
    (settings.local_serving_dir / "replica-1").mkdir(parents=True)
    for index, server in zip((0, 2), servers, strict=True):
        state_dir = deploy.local_replica_dir(settings, index)
        state_dir.mkdir(parents=True, exist_ok=True)
        state = background.LocalServerState(
            os.getpid(), server.rest_port, server.grpc_port, str(config_path), current_process()
        )
        background.write_state(state_dir, state)
    target = deploy.resolve_target(settings)
    assert [r.grpc for r in target.replicas] == [server.grpc_target for server in servers]
    assert all(r.reload_token for r in target.replicas)


def test_reconcile_sends_the_known_good_config_to_each_replica_that_drifted(world, model_root, tmp_path):
    """A replica told something else (an operator's reload, a restart on an old file) is found
    and repaired; the one that serves the known-good config is left alone."""
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

    from release.reconcile import repair_serving

    target, clients, servers = world
    nothing = ModelServerConfig()
    nothing.model_config_list.SetInParent()
    known_good = target.config_path.read_text()
    clients[1].reload_config(nothing)  # replica 2 unloads everything
    # The local stand-in keeps what it applied in its config file (TF Serving does not): put the
    # shared file back, as a replica restarted on an old file of its own would leave it.
    target.config_path.write_text(known_good)
    assert clients[1].label_version(MODEL_NAME, "stable") is None
    settings = Settings(home=tmp_path / "home", model_name=MODEL_NAME, serving_attempts=1)
    said = repair_serving(settings, target, production=1, in_review=None)
    assert said == [
        f"the server at {servers[1].grpc_target} served nothing but its config says "
        "{'canary': 1, 'stable': 1}: sent the config again"
    ]
    assert_serving_stable_only(clients, model_root)
