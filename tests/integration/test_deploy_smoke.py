"""Deploy from the store to a live server, smoke-test the canary, roll back; nothing half-served."""

import json
import shutil

import numpy as np
import pytest

from infra.rollout import deploy, smoke
from infra.tfserving.client import ModelLoadError
from infra.tfserving.model_config import read_config, served_versions
from infra.tfserving.protocol import CONFIG_FILE
from infra.tfserving.target import ServingTarget
from model_registry import open_store
from model_registry.store import StoreError
from railyard import contract
from railyard.configs import SmokeBudget
from tests.support.serving_fixtures import CORRUPT_VERSION, GOLDEN_INSTANCES, MODEL_NAME, export_tiny_model, golden

# Session fixtures: tiny SavedModels and local servers, shared by the serving suites.
pytest_plugins = ["tests.support.serving_fixtures"]

FAST = SmokeBudget(p95_ms=5_000, requests=20, concurrency=2, tolerance=1e-5)


@pytest.fixture
def world(tmp_path, model_root, start_server):
    """A local store holding tiny versions 1, 2 (good) and 3 (corrupt), and an empty live server."""
    store = open_store((tmp_path / "store").as_uri())
    for number, source in enumerate((1, 2, CORRUPT_VERSION), start=1):
        published = store.publish(
            MODEL_NAME,
            model_root / MODEL_NAME / str(source),
            metadata={"data_fingerprint": f"d{number}", "code_version": "c"},
        )
        assert published.version == number
    serving_root = tmp_path / "serving"
    serving_root.mkdir()
    server = start_server(config_path=serving_root / CONFIG_FILE)
    target = ServingTarget(server.grpc_target, server.rest_url, serving_root, str(serving_root))
    with target.client(timeout_s=20) as client:
        yield store, target, client


def _served(version_dir):
    return contract.read_contract(version_dir)


def _stable_release(store, target, client, version: int) -> None:
    deploy.materialize(store, MODEL_NAME, version, target)
    deploy.make_stable(client, target, MODEL_NAME, version, timeout_s=60)


def test_canary_beside_stable_passes_smoke_tests_then_rolls_back(world, model_root):
    store, target, client = world
    _stable_release(store, target, client, 1)
    deploy.materialize(store, MODEL_NAME, 2, target)
    labels = deploy.deploy_canary(client, target, MODEL_NAME, 2, timeout_s=60)
    assert labels == {"stable": 1, "canary": 2}
    assert served_versions(read_config(target.config_path), MODEL_NAME) == ({1, 2}, labels)  # the known-good file

    version_dir = target.model_root / MODEL_NAME / "2"
    report = smoke.run_smoke_tests(
        client, MODEL_NAME, 2, contract.read_golden(version_dir), FAST, label="canary", served=_served(version_dir)
    )
    assert report.passed, report.summary()
    assert [c.name for c in report.checks] == [
        "status",
        "metadata",
        *(
            f"golden_{signature}_{protocol}_{target}"
            for signature in ("serving_default", "features")
            for protocol in ("rest", "grpc")
            for target in ("version", "label")
        ),
        "latency_burst",
    ]
    assert report.requests == 20 and report.errors == 0 and set(report.latency_ms) == {"p50", "p95", "p99", "max"}

    assert deploy.remove_canary(client, target, MODEL_NAME, 2) == {"stable": 1, "canary": 1}
    states = {status.version: status.state for status in client.model_status(MODEL_NAME)}
    assert states[1] == "AVAILABLE" and states.get(2, "END") == "END"
    served = client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, label="stable")
    np.testing.assert_allclose(served, golden(model_root, 1)["predictions"], atol=1e-5)


def test_wrong_answers_and_a_blown_latency_budget_fail_named_checks(world):
    store, target, client = world
    version_dir = deploy.materialize(store, MODEL_NAME, 1, target)
    deploy.deploy_canary(client, target, MODEL_NAME, 1, timeout_s=60)
    expected = contract.read_golden(version_dir)
    wrong = expected | {
        "features": expected["features"] | {"predictions": [[p[0] + 0.01] for p in expected["features"]["predictions"]]}
    }
    report = smoke.run_smoke_tests(
        client,
        MODEL_NAME,
        1,
        wrong,
        SmokeBudget(p95_ms=1e-6, requests=5, concurrency=4, tolerance=1e-5),
        label="canary",
        served=_served(version_dir),
    )
    assert not report.passed
    assert {c.name for c in report.failures()} == {
        "golden_features_rest_version",
        "golden_features_rest_label",
        "golden_features_grpc_version",
        "golden_features_grpc_label",
        "latency_burst",
    }
    assert "differ from the offline model by up to 0.01" in report.failures()[0].detail
    assert "over the 1e-06 ms budget" in report.summary()


def test_smoke_tests_against_an_unserved_label_fail_without_raising(world):
    store, target, client = world
    version_dir = deploy.materialize(store, MODEL_NAME, 1, target)
    deploy.make_stable(client, target, MODEL_NAME, 1, timeout_s=60)
    report = smoke.run_smoke_tests(
        client, MODEL_NAME, 1, contract.read_golden(version_dir), FAST, label="nosuchlabel", served=_served(version_dir)
    )
    assert {c.name for c in report.failures()} == {
        f"golden_{signature}_{protocol}_label"
        for signature in ("serving_default", "features")
        for protocol in ("rest", "grpc")
    }
    assert "Unrecognized servable version label" in report.failures()[0].detail


def test_a_version_that_fails_to_load_leaves_stable_serving_and_the_config_known_good(world, model_root):
    store, target, client = world
    _stable_release(store, target, client, 1)
    before = target.config_path.read_text()
    deploy.materialize(store, MODEL_NAME, 3, target)
    with pytest.raises(ModelLoadError, match="version 3"):
        deploy.deploy_canary(client, target, MODEL_NAME, 3, timeout_s=60)
    assert target.config_path.read_text() == before
    assert client.label_version(MODEL_NAME, "stable") == 1
    served = client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, label="stable")
    np.testing.assert_allclose(served, golden(model_root, 1)["predictions"], atol=1e-5)


def test_no_label_is_served_before_the_first_deploy(world):
    _, _, client = world  # its server started without a config: TF Serving has no label map yet
    assert client.label_version(MODEL_NAME, "stable") is None


def test_make_stable_loads_an_unserved_version_first(world):
    store, target, client = world
    _stable_release(store, target, client, 1)
    _stable_release(store, target, client, 2)
    assert served_versions(read_config(target.config_path), MODEL_NAME) == ({2}, {"stable": 2, "canary": 2})
    assert client.label_version(MODEL_NAME, "stable") == 2
    assert client.label_version(MODEL_NAME, "nosuchlabel") is None


def test_materialize_verifies_and_never_overwrites_a_version_folder(world):
    store, target, _ = world
    first = deploy.materialize(store, MODEL_NAME, 1, target)
    assert deploy.materialize(store, MODEL_NAME, 1, target) == first  # identical copy: reused
    golden_file = first / "assets.extra" / "railyard_golden.json"
    golden_file.write_text(json.dumps({"instances": [], "predictions": []}))
    with pytest.raises(StoreError, match="railyard_golden.json differs from the manifest"):
        deploy.materialize(store, MODEL_NAME, 1, target)
    shutil.rmtree(first)
    assert deploy.materialize(store, MODEL_NAME, 1, target) == first


def test_the_smoke_tests_check_the_output_the_versions_contract_names(world, tmp_path):
    """A kind names its output (here ``probability``): the version's contract says so, and the
    smoke tests check the served signatures against it; a contract that names another output
    than the version serves fails the metadata and gRPC golden checks."""
    store, target, client = world
    source = export_tiny_model(tmp_path / "probability", seed=5, output="probability")
    published = store.publish(MODEL_NAME, source, metadata={"data_fingerprint": "d4", "code_version": "tiny"})
    version_dir = deploy.materialize(store, MODEL_NAME, published.version, target)
    deploy.deploy_canary(client, target, MODEL_NAME, published.version, timeout_s=60)
    golden_requests = contract.read_golden(version_dir)

    served = _served(version_dir)
    assert served["output"] == "probability" and served["kind"] == "tiny"
    report = smoke.run_smoke_tests(
        client, MODEL_NAME, published.version, golden_requests, FAST, "canary", served=served
    )
    assert report.passed, report.summary()
    assert "-> probability (float32)" in {c.name: c.detail for c in report.checks}["metadata"]

    claims_score = served | {"output": "score"}
    report = smoke.run_smoke_tests(
        client, MODEL_NAME, published.version, golden_requests, FAST, "canary", served=claims_score
    )
    assert {c.name for c in report.failures()} == {
        "metadata",
        *(f"golden_{signature}_grpc_{where}" for signature in contract.SIGNATURES for where in ("version", "label")),
    }
