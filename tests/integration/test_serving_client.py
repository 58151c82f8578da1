"""Serving clients and label moves against the local server; warmup files."""

import shutil
import socket

import numpy as np
import pytest

# The fixtures module is also a plugin (shared session fixtures): rewrite it before importing it.
from infra.rollout import labels
from infra.tfserving import client as S
from infra.tfserving.model_config import read_config, served_versions
from infra.tfserving.protocol import VersionStatus, fill_tensor
from infra.tfserving.warmup import WARMUP_FILE, read_warmup_requests, write_warmup_requests
from tests.support.serving_fixtures import (
    CORRUPT_VERSION,
    GOLDEN_INSTANCES,
    MODEL_NAME,
    assert_scores_of,
    client_for,
    model_config,
)

# Session fixtures: tiny SavedModels and local servers, shared by the serving suites.
pytest_plugins = ["tests.support.serving_fixtures"]


@pytest.fixture(scope="module")
def client(contract_server):
    with client_for(contract_server) as client:
        yield client


def states(client):
    return [(status.version, status.state) for status in client.model_status(MODEL_NAME)]


def by_label(client, label):
    return client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, label=label)


@pytest.mark.parametrize(
    ("version", "label", "expected"),
    [(1, None, 1), (2, None, 2), (None, "stable", 1), (None, "canary", 2), (None, None, 2)],
)
def test_rest_and_grpc_predictions_equal_the_offline_model(client, model_root, version, label, expected):
    by_rest = client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, version=version, label=label)
    assert_scores_of(expected, by_rest, model_root)
    by_grpc = client.predict_grpc(MODEL_NAME, GOLDEN_INSTANCES, version=version, label=label)
    assert list(by_grpc) == ["score"] and by_grpc["score"].dtype == np.float32
    assert_scores_of(expected, by_grpc["score"], model_root)


def test_status_and_metadata(client):
    assert client.model_status(MODEL_NAME) == [VersionStatus(1, "AVAILABLE"), VersionStatus(2, "AVAILABLE")]
    metadata = client.metadata_rest(MODEL_NAME, 1)
    assert metadata["model_spec"]["version"] == "1"
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert set(signature["inputs"]) == {"userId", "movieId"}


def test_errors_carry_tf_servings_code_and_message(client):
    with pytest.raises(S.ServingError) as error:
        by_label(client, "nope")
    assert (error.value.code, error.value.details) == ("INVALID_ARGUMENT", "Unrecognized servable version label: nope")
    with pytest.raises(S.ServingError) as error:
        client.predict_grpc("nope", GOLDEN_INSTANCES)
    assert (error.value.code, error.value.details) == ("NOT_FOUND", "Servable not found for request: Latest(nope)")
    with pytest.raises(ValueError, match="not both"):
        client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES, version=1, label="stable")


def test_an_unreachable_server_fails_after_retries_naming_the_endpoint():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = S.ServingClient(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", attempts=2, backoff_s=0.01)
    with pytest.raises(S.ServingUnavailableError, match=rf"REST http://127.0.0.1:{port} is unavailable after 2 "):
        client.predict_rest(MODEL_NAME, GOLDEN_INSTANCES)
    with pytest.raises(S.ServingUnavailableError, match=rf"gRPC 127.0.0.1:{port} \(GetModelStatus\) is unavailable"):
        client.model_status(MODEL_NAME)


def test_wait_fails_fast_with_the_load_error(start_server, model_root):
    client = client_for(start_server(model_config(model_root, {1}, {"stable": 1})))
    client.reload_config(model_config(model_root, {1, CORRUPT_VERSION}, {"stable": 1}))
    expected = "version 4 of model 'recmodel' failed to load .*OUT_OF_RANGE: Read less bytes than requested"
    with pytest.raises(S.ModelLoadError, match=expected):
        client.wait_until_available(MODEL_NAME, CORRUPT_VERSION, timeout_s=60, poll_s=0.05)


def test_wait_times_out_on_a_version_that_never_appears(start_server, model_root):
    client = client_for(start_server(model_config(model_root, {1}, {"stable": 1})))
    client.reload_config(model_config(model_root, {1, 7}, {"stable": 1}))  # no directory 7: only a warning
    expected = r"version 7 of model 'recmodel' was not AVAILABLE .* after 0.3 s \(last seen: not known"
    with pytest.raises(TimeoutError, match=expected):
        client.wait_until_available(MODEL_NAME, 7, timeout_s=0.3, poll_s=0.05)


def test_load_version_as_canary_loads_then_labels_and_drops_the_old_canary(start_server, model_root):
    known_good = model_config(model_root, {1, 2}, {"stable": 1, "canary": 2})
    server = start_server(known_good)
    client = client_for(server)
    base_path = model_root / MODEL_NAME
    config = labels.load_version_as_canary(client, MODEL_NAME, base_path, 3, known_good, timeout_s=60, poll_s=0.05)
    assert served_versions(config, MODEL_NAME) == ({1, 3}, {"stable": 1, "canary": 3})
    assert read_config(server.config_path) == config
    assert server.core.wait_until_settled(timeout_s=60)
    assert states(client) == [(1, "AVAILABLE"), (2, "END"), (3, "AVAILABLE")]
    assert_scores_of(3, by_label(client, "canary"), model_root)
    assert_scores_of(1, by_label(client, "stable"), model_root)


def test_a_failed_canary_restores_the_known_good_config(start_server, model_root):
    known_good = model_config(model_root, {1}, {"stable": 1})
    server = start_server(known_good)
    client = client_for(server)
    base_path = model_root / MODEL_NAME
    with pytest.raises(S.ModelLoadError) as error:
        labels.load_version_as_canary(
            client, MODEL_NAME, base_path, CORRUPT_VERSION, known_good, timeout_s=60, poll_s=0.05
        )
    assert "the known-good config was sent again" in error.value.__notes__
    assert read_config(server.config_path) == known_good
    with pytest.raises(S.ServingError, match="Unrecognized servable version label: canary"):
        by_label(client, "canary")
    assert_scores_of(1, by_label(client, "stable"), model_root)


def test_the_first_canary_of_a_model_without_stable(start_server, model_root, tmp_path):
    client = client_for(start_server(config_path=tmp_path / "empty.config"))
    nothing = model_config(model_root, set(), {})
    base_path = model_root / MODEL_NAME
    config = labels.load_version_as_canary(client, MODEL_NAME, base_path, 2, nothing, timeout_s=60, poll_s=0.05)
    assert served_versions(config, MODEL_NAME) == ({2}, {"canary": 2})
    assert_scores_of(2, by_label(client, "canary"), model_root)


def test_rollback_then_redeploy_then_promote(start_server, model_root):
    known_good = model_config(model_root, {1, 2}, {"stable": 1, "canary": 2})
    server = start_server(known_good)
    client = client_for(server)
    base_path = model_root / MODEL_NAME

    with pytest.raises(ValueError, match="is the stable version"):
        labels.unload_version(client, MODEL_NAME, base_path, 1, known_good)
    rolled_back = labels.unload_version(client, MODEL_NAME, base_path, 2, known_good)
    assert served_versions(rolled_back, MODEL_NAME) == ({1}, {"stable": 1, "canary": 1})
    with pytest.raises(ValueError, match="version 2 of model 'recmodel' is not served"):
        labels.promote_version(client, MODEL_NAME, base_path, 2, rolled_back)

    # An unloaded (not failed) version can be loaded again.
    redeployed = labels.load_version_as_canary(client, MODEL_NAME, base_path, 2, rolled_back, timeout_s=60, poll_s=0.05)
    promoted = labels.promote_version(client, MODEL_NAME, base_path, 2, redeployed)
    assert served_versions(promoted, MODEL_NAME) == ({2}, {"stable": 2, "canary": 2})
    assert server.core.wait_until_settled(timeout_s=60)
    assert states(client) == [(1, "END"), (2, "AVAILABLE")]
    assert_scores_of(2, by_label(client, "stable"), model_root)


def test_warmup_file_parses_back_and_is_replayed_at_load(start_server, model_root, tmp_path):
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2

    root = tmp_path / "models"
    shutil.copytree(model_root / MODEL_NAME / "1", root / MODEL_NAME / "1")
    path = write_warmup_requests(root / MODEL_NAME / "1", MODEL_NAME, GOLDEN_INSTANCES)
    assert path == root / MODEL_NAME / "1" / WARMUP_FILE
    (request,) = read_warmup_requests(root / MODEL_NAME / "1")
    assert (request.model_spec.name, request.model_spec.signature_name) == (MODEL_NAME, "serving_default")
    assert tf.make_ndarray(request.inputs["userId"]).tolist() == [row["userId"] for row in GOLDEN_INSTANCES]
    assert tf.make_ndarray(request.inputs["movieId"]).dtype == np.int64
    # Inputs are set directly, exactly as tf.make_tensor_proto makes them (it is slower per batch).
    for array in (np.arange(5), np.ones((3, 4), np.float32), np.ones((2, 3))[:, ::2], np.array([7]), np.zeros((0, 2))):
        proto = tensor_pb2.TensorProto()
        fill_tensor(proto, array)
        assert proto == tf.make_tensor_proto(array)

    # A warmup request that does not fit the signature fails the load, as in TF Serving.
    shutil.copytree(root / MODEL_NAME / "1", root / MODEL_NAME / "2")
    write_warmup_requests(root / MODEL_NAME / "2", MODEL_NAME, [{"userId": 1}])
    client = client_for(start_server(model_config(root, {1}, {"stable": 1})))
    client.reload_config(model_config(root, {1, 2}, {"stable": 1}))
    with pytest.raises(S.ModelLoadError, match="Missing but required: {movieId}"):
        client.wait_until_available(MODEL_NAME, 2, timeout_s=60, poll_s=0.05)
    assert states(client) == [(1, "AVAILABLE"), (2, "END")]
