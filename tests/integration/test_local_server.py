"""The local server against TF Serving's contract: REST/gRPC formats, errors, reload semantics."""

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

# The fixtures module is also a plugin (shared session fixtures): rewrite it before importing it.
from infra.local_server import StatusError, background
from infra.local_server.monitoring import read_monitoring_config
from infra.local_server.rest import RestLimits
from infra.tfserving.client import ServingClient, ServingError
from infra.tfserving.model_config import read_config, write_config_atomically
from infra.tfserving.protocol import build_predict_request
from infra.tfserving.warmup import write_warmup_requests
from railyard.processes import process_alive
from tests.support.serving_fixtures import (
    CORRUPT_VERSION,
    FEATURE_VALUES,
    GOLDEN_INSTANCES,
    MODEL_NAME,
    assert_scores_of,
    client_for,
    golden,
    model_config,
)

# Session fixtures: tiny SavedModels and local servers, shared by the serving suites.
pytest_plugins = ["tests.support.serving_fixtures"]

MODEL_PATH = f"/v1/models/{MODEL_NAME}"


def rest(server, method, path, body=None):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def predict(server, selector=""):
    """POST the golden instances to <model><selector>:predict; the predictions."""
    status, answer = rest(server, "POST", f"{MODEL_PATH}{selector}:predict", {"instances": GOLDEN_INSTANCES})
    assert status == 200, answer
    return answer["predictions"]


def ok(version, state):
    return {"version": str(version), "state": state, "status": {"error_code": "OK", "error_message": ""}}


def states(client, model=MODEL_NAME):
    return [(status.version, status.state) for status in client.model_status(model)]


# -- REST and gRPC contract (read-only server: stable -> 1, canary -> 2) --------------------------


def test_status_json_is_tf_servings(contract_server):
    both = {"model_version_status": [ok(1, "AVAILABLE"), ok(2, "AVAILABLE")]}
    assert rest(contract_server, "GET", MODEL_PATH) == (200, both)
    one = {"model_version_status": [ok(2, "AVAILABLE")]}
    assert rest(contract_server, "GET", f"{MODEL_PATH}/versions/2") == (200, one)


def test_status_of_unknown_versions_and_models_is_not_found(contract_server):
    missing_version = {"error": "Could not find version 9 of model recmodel"}
    assert rest(contract_server, "GET", f"{MODEL_PATH}/versions/9") == (404, missing_version)
    missing_model = {"error": "Could not find any versions of model nope"}
    assert rest(contract_server, "GET", "/v1/models/nope") == (404, missing_model)


def test_metadata_nests_signature_def_twice(contract_server):
    status, answer = rest(contract_server, "GET", f"{MODEL_PATH}/versions/1/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    signature = answer["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"

    def described(tensors):
        return {name: (t["dtype"], [d["size"] for d in t["tensor_shape"]["dim"]]) for name, t in tensors.items()}

    assert described(signature["inputs"]) == {"userId": ("DT_INT64", ["-1"]), "movieId": ("DT_INT64", ["-1"])}
    assert described(signature["outputs"]) == {"score": ("DT_FLOAT", ["-1", "1"])}
    # Without a version, the latest AVAILABLE version answers.
    assert rest(contract_server, "GET", f"{MODEL_PATH}/metadata")[1]["model_spec"]["version"] == "2"


def test_sparrowrecsys_style_request_returns_row_predictions(contract_server, model_root):
    body = {"instances": [{"userId": 6, "movieId": 1}]}
    status, answer = rest(contract_server, "POST", f"{MODEL_PATH}:predict", body)
    assert status == 200 and list(answer) == ["predictions"]
    ((score,),) = answer["predictions"]
    assert isinstance(score, float)
    assert score == pytest.approx(golden(model_root, 2)["predictions"][0][0], abs=1e-5)  # latest: version 2


@pytest.mark.parametrize(
    ("selector", "version"),
    [("/versions/1", 1), ("/versions/2", 2), ("/labels/stable", 1), ("/labels/canary", 2)],
)
def test_predict_by_version_and_label_matches_the_offline_model(contract_server, model_root, selector, version):
    assert_scores_of(version, predict(contract_server, selector), model_root)


def test_versions_really_differ(model_root):
    """Guards the routing tests: they could not tell versions apart otherwise."""
    first, second = (np.asarray(golden(model_root, version)["predictions"]) for version in (1, 2))
    assert np.max(np.abs(first - second)) > 1e-2


def test_columnar_request_returns_outputs(contract_server, model_root):
    columns = {key: [row[key] for row in GOLDEN_INSTANCES] for key in ("userId", "movieId")}
    status, answer = rest(contract_server, "POST", f"{MODEL_PATH}/versions/1:predict", {"inputs": columns})
    assert status == 200 and list(answer) == ["outputs"]
    assert_scores_of(1, answer["outputs"], model_root)


@pytest.mark.parametrize(
    ("selector", "body", "status", "message"),
    [
        ("/labels/nope", {"instances": GOLDEN_INSTANCES}, 400, "Unrecognized servable version label: nope"),
        ("/versions/9", {"instances": GOLDEN_INSTANCES}, 404, "Servable not found for request: Specific(recmodel, 9)"),
        ("", b"", 400, "JSON Parse error: The document is empty"),
        ("", {"signature_name": "serving_default"}, 400, "Missing 'inputs' or 'instances' key"),
        ("", {"instances": [{"userId": 6}]}, 400, "keys must be equal to: movieId,userId"),
        (
            "",
            {"instances": [{"userId": "6", "movieId": 1}]},
            400,
            'JSON Value: "6" Type: String is not of expected type: int64',
        ),
        (
            "",
            {"signature_name": "nope", "instances": GOLDEN_INSTANCES},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
    ],
)
def test_predict_errors_use_tf_servings_codes_and_messages(contract_server, selector, body, status, message):
    answer_status, answer = rest(contract_server, "POST", f"{MODEL_PATH}{selector}:predict", body)
    assert answer_status == status
    assert list(answer) == ["error"] and message in answer["error"]


# A features row one value short: the graph's matrix product fails at run time.
SHORT_FEATURES = {
    "signature_name": "features",
    "instances": [GOLDEN_INSTANCES[0] | FEATURE_VALUES | {"movie_features": FEATURE_VALUES["movie_features"][1:]}],
}


def test_a_failure_inside_the_graph_keeps_tf_servings_wording_without_graph_internals(contract_server):
    """TensorFlow's eager runtime wraps a graph's error in "Graph execution error: Detected at
    node …" with the node's Python stack; TF Serving answers with the status message itself."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    status, answer = rest(contract_server, "POST", f"{MODEL_PATH}/labels/stable:predict", SHORT_FEATURES)
    assert status == 400 and list(answer) == ["error"]
    with grpc.insecure_channel(contract_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = build_predict_request(
            MODEL_NAME, SHORT_FEATURES["instances"], signature_name="features", label="stable"
        )
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(request, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for message in (answer["error"], error.value.details()):
        assert message.startswith("Matrix size-incompatible: In[0]: [1,"), message
        for internal in ("Graph execution error", "Detected at node", "{{node", "StatefulPartitionedCall", "[Op:"):
            assert internal not in message
        assert "\n" not in message


def test_unknown_model_is_not_found(contract_server):
    assert rest(contract_server, "POST", "/v1/models/nope:predict", {"instances": GOLDEN_INSTANCES}) == (
        404,
        {"error": "Servable not found for request: Latest(nope)"},
    )


def test_grpc_predict_answers_like_tf_serving(contract_server, model_root):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(contract_server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(build_predict_request(MODEL_NAME, GOLDEN_INSTANCES, label="canary"), timeout=30)
        assert (response.model_spec.name, response.model_spec.version.value) == (MODEL_NAME, 2)
        assert response.model_spec.signature_name == "serving_default"
        score = response.outputs["score"]
        assert [dim.size for dim in score.tensor_shape.dim] == [len(GOLDEN_INSTANCES), 1]
        # Typed value fields, as Tensor::AsProtoField writes them: clients read float_val.
        assert_scores_of(2, np.reshape(score.float_val, (-1, 1)), model_root)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(build_predict_request(MODEL_NAME, GOLDEN_INSTANCES, label="nope"), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details() == "Unrecognized servable version label: nope"


# -- reload semantics (a fresh server per test) ----------------------------------------------------


def test_label_on_a_version_that_is_not_loaded_fails_and_the_config_file_keeps_the_applied_one(
    start_server, model_root
):
    applied = model_config(model_root, {1}, {"stable": 1})
    server = start_server(applied)
    client = client_for(server)
    rejected = model_config(model_root, {1, 2}, {"stable": 2})
    with pytest.raises(ServingError) as error:
        client.reload_config(rejected)
    assert error.value.code == "FAILED_PRECONDITION"
    assert error.value.details == (
        "Request to assign label to version 2 of model recmodel, which is not currently available for inference"
    )
    assert read_config(server.config_path) == applied  # a refused config is never persisted
    assert states(client) == [(1, "AVAILABLE")]  # version 2 was never loaded
    assert_scores_of(1, predict(server, "/labels/stable"), model_root)


def test_corrupted_version_ends_with_its_error_and_the_old_one_keeps_serving(start_server, model_root, caplog):
    server = start_server(model_config(model_root, {1}, {"stable": 1}))
    client = client_for(server)
    with_corrupt = model_config(model_root, {1, CORRUPT_VERSION}, {"stable": 1})
    with caplog.at_level(logging.WARNING, logger="infra.local_server.core"):
        client.reload_config(with_corrupt)
        assert server.core.wait_until_settled(timeout_s=60)
        (status,) = client.model_status(MODEL_NAME, CORRUPT_VERSION)
        assert (status.state, status.error_code) == ("END", "OUT_OF_RANGE")
        assert "Read less bytes than requested" in status.error_message
        client.reload_config(with_corrupt)  # a failed version number is not loaded again
        assert server.core.wait_until_settled(timeout_s=60)
    assert len([r for r in caplog.records if f"version: {CORRUPT_VERSION}}} failed" in r.getMessage()]) == 1
    (rest_status,) = rest(server, "GET", f"{MODEL_PATH}/versions/{CORRUPT_VERSION}")[1]["model_version_status"]
    assert rest_status["state"] == "END" and rest_status["status"]["error_code"] == "OUT_OF_RANGE"
    assert_scores_of(1, predict(server), model_root)


def test_failed_loads_are_retried_before_ending(start_server, model_root, caplog):
    server = start_server(model_config(model_root, {1}, {}), max_num_load_retries=2, load_retry_interval_s=0.01)
    with caplog.at_level(logging.WARNING, logger="infra.local_server.core"):
        client_for(server).reload_config(model_config(model_root, {1, CORRUPT_VERSION}, {}))
        assert server.core.wait_until_settled(timeout_s=60)
    assert len([r for r in caplog.records if "failed: OUT_OF_RANGE" in r.getMessage()]) == 3


def test_a_replaced_version_keeps_serving_while_its_replacement_fails(start_server, model_root):
    server = start_server(model_config(model_root, {1}, {}))
    client = client_for(server)
    client.reload_config(model_config(model_root, {CORRUPT_VERSION}, {}))
    assert server.core.wait_until_settled(timeout_s=60)
    assert states(client) == [(1, "AVAILABLE"), (CORRUPT_VERSION, "END")]  # availability-preserving policy
    assert_scores_of(1, predict(server), model_root)
    client.reload_config(model_config(model_root, {2}, {}))
    assert server.core.wait_until_settled(timeout_s=60)
    assert states(client) == [(1, "END"), (2, "AVAILABLE"), (CORRUPT_VERSION, "END")]


def test_a_reload_that_omits_a_model_unloads_it(start_server, model_root):
    config = model_config(model_root, {1}, {"stable": 1})
    other = config.model_config_list.config.add()
    other.CopyFrom(model_config(model_root, {2}, {}).model_config_list.config[0])
    other.name = "other"
    server = start_server(config)
    client = client_for(server)
    assert states(client, "other") == [(2, "AVAILABLE")]
    client.reload_config(model_config(model_root, {1}, {"stable": 1}))
    assert server.core.wait_until_settled(timeout_s=60)
    assert states(client, "other") == [(2, "END")]
    assert rest(server, "POST", "/v1/models/other:predict", {"instances": GOLDEN_INSTANCES}) == (
        404,
        {"error": "Servable not found for request: Latest(other)"},
    )


def test_versions_dropped_from_the_config_end_and_labels_move(start_server, model_root):
    server = start_server(model_config(model_root, {1, 2}, {"stable": 1, "canary": 2}))
    client = client_for(server)
    client.reload_config(model_config(model_root, {2}, {"stable": 2}))
    assert server.core.wait_until_settled(timeout_s=60)
    assert [(s.version, s.state, s.error_code) for s in client.model_status(MODEL_NAME)] == [
        (1, "END", "OK"),
        (2, "AVAILABLE", "OK"),
    ]
    assert_scores_of(2, predict(server, "/labels/stable"), model_root)
    assert rest(server, "POST", f"{MODEL_PATH}/labels/canary:predict", {"instances": GOLDEN_INSTANCES})[0] == 400


def test_a_missing_specific_version_is_only_a_warning(start_server, model_root, caplog):
    server = start_server(model_config(model_root, {1}, {"stable": 1}))
    client = client_for(server)
    with caplog.at_level(logging.WARNING, logger="infra.local_server.core"):
        client.reload_config(model_config(model_root, {1, 7}, {"stable": 1}))
    assert "Version 7 of servable recmodel" in caplog.text and "was not found in the file system" in caplog.text
    assert states(client) == [(1, "AVAILABLE")]
    # If none of the listed versions exists, every version of the model is unloaded.
    client.reload_config(model_config(model_root, {7}, {}))
    assert server.core.wait_until_settled(timeout_s=60)
    assert states(client) == [(1, "END")]


def test_a_restart_serves_the_persisted_config(start_server, model_root):
    first = start_server(model_config(model_root, {1}, {"stable": 1}))
    client = client_for(first)
    # With --allow_version_labels_for_unavailable_models a *new* label may name a loading version.
    client.reload_config(model_config(model_root, {1, 2}, {"stable": 1, "canary": 2}))
    client.wait_until_available(MODEL_NAME, 2, timeout_s=60)
    first.stop()

    second = start_server(config_path=first.config_path)
    assert states(client_for(second)) == [(1, "AVAILABLE"), (2, "AVAILABLE")]
    assert_scores_of(2, predict(second, "/labels/canary"), model_root)


def test_without_the_flag_labels_stop_the_start_like_tf_serving(start_server, model_root):
    with pytest.raises(StatusError) as error:
        start_server(model_config(model_root, {1}, {"stable": 1}), allow_version_labels_for_unavailable_models=False)
    assert str(error.value) == (
        "FAILED_PRECONDITION: Request to assign label to version 1 of model recmodel, "
        "which is not currently available for inference"
    )


def test_start_fails_when_a_model_does_not_load(start_server, model_root):
    with pytest.raises(StatusError) as error:
        start_server(model_config(model_root, {CORRUPT_VERSION}, {}))
    assert error.value.code == "UNKNOWN"
    assert error.value.message.startswith(
        "1 model(s) did not become available: {{{name: recmodel version: 4} due to error: OUT_OF_RANGE: "
    )


def test_a_server_without_a_config_file_starts_empty_and_persists_reloads(start_server, model_root, tmp_path):
    path = tmp_path / "new" / "models.config"
    server = start_server(config_path=path)
    assert rest(server, "GET", MODEL_PATH) == (404, {"error": "Could not find any versions of model recmodel"})
    config = model_config(model_root, {1}, {"stable": 1})
    client_for(server).reload_config(config)  # a new model name: the reload waits for it
    assert read_config(path) == config
    assert rest(server, "GET", MODEL_PATH)[1] == {"model_version_status": [ok(1, "AVAILABLE")]}


def test_bad_config_files_and_busy_ports_are_named(start_server, model_root, tmp_path):
    broken = tmp_path / "broken.config"
    broken.write_text("model_config_list { nonsense: 1 }")
    with pytest.raises(ValueError, match=f"{broken} is not a valid TF Serving ModelServerConfig"):
        start_server(config_path=broken)
    garbage = tmp_path / "garbage.config"
    garbage.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValueError, match=f"{garbage} is not a valid TF Serving ModelServerConfig: not UTF-8 text"):
        start_server(config_path=garbage)
    first = start_server(model_config(model_root, {1}, {}))
    # The holder is this process: it runs the first server.
    taken = rf"the port is taken by pid {os.getpid()} \("
    with pytest.raises(OSError, match=f"cannot listen for gRPC on 127.0.0.1:{first.grpc_port}: {taken}"):
        start_server(config_path=first.config_path, grpc_port=first.grpc_port)
    with pytest.raises(OSError, match=f"cannot listen for REST on 127.0.0.1:{first.rest_port}: {taken}"):
        start_server(config_path=first.config_path, rest_port=first.rest_port)


# -- the background process (what `railyard run` starts and later runs reuse) ----------------------


def test_a_background_server_serves_the_config_it_was_given_and_is_reused_then_stopped(
    model_root, tmp_path, monkeypatch
):
    # The child's own settings point elsewhere: what it serves must come from its caller.
    monkeypatch.setenv("RAILYARD_HOME", str(tmp_path / "elsewhere"))
    config_path = served_model_root(model_root, tmp_path / "models") / "models.config"
    write_config_atomically(config_path, model_config(config_path.parent, {1}, {}))
    state_dir = tmp_path / "state"
    state = background.ensure_local_server(state_dir, config_path, rest_port=0, grpc_port=0)
    try:
        assert Path(state.config_path) == config_path
        served = SimpleNamespace(rest_url=state.rest_url)
        assert rest(served, "GET", MODEL_PATH) == (200, {"model_version_status": [ok(1, "AVAILABLE")]})
        assert background.ensure_local_server(state_dir, config_path, rest_port=0, grpc_port=0) == state
        with pytest.raises(background.LocalServerError, match="stop it with `railyard serve --stop`"):
            background.ensure_local_server(state_dir, tmp_path / "other.config", rest_port=0, grpc_port=0)
        # TF Serving's metrics by default (the state folder's monitoring config); the liveness
        # probes of ensure_local_server are not counted, the status call above is.
        assert read_monitoring_config(state_dir / background.MONITORING_FILE) == METRICS_PATH
        assert request_counts(scrape(state.rest_url)) == {(MODEL_NAME, "OK"): 1}
    finally:
        stopped = background.stop(state_dir)
    assert stopped == state
    assert background.running(state_dir) is None and not (state_dir / background.STATE_FILE).exists()
    assert "Traceback" not in (state_dir / background.LOG_FILE).read_text()


def test_stop_never_signals_a_process_that_merely_reuses_a_stale_pid(tmp_path):
    """A state file left by a killed server names a pid another process may hold by now."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        wrong_start = {"host": socket.gethostname(), "pid": bystander.pid, "start": 1}  # not its start time
        background.write_state(tmp_path, background.LocalServerState(bystander.pid, 1, 2, "models.config", wrong_start))
        assert background.stop(tmp_path, timeout_s=1) is None
        assert bystander.poll() is None, "the bystander was signalled"
        assert not (tmp_path / background.STATE_FILE).exists()  # the stale file is gone

        # A file without the process's identity (an older Railyard) is trusted only when the pid's
        # command line is that server's.
        legacy = {"pid": bystander.pid, "rest_port": 1, "grpc_port": 2, "config_path": "models.config"}
        (tmp_path / background.STATE_FILE).write_text(json.dumps(legacy))
        assert background.stop(tmp_path, timeout_s=1) is None
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_server_started_by_an_older_railyard_is_still_stopped(model_root, tmp_path):
    """Its state file has no process identity: its command line identifies it."""
    config_path = served_model_root(model_root, tmp_path / "models") / "models.config"
    write_config_atomically(config_path, model_config(config_path.parent, {1}, {}))
    state_dir = tmp_path / "state"
    state = background.ensure_local_server(state_dir, config_path, rest_port=0, grpc_port=0)
    legacy = json.loads((state_dir / background.STATE_FILE).read_text())
    del legacy["process"]
    (state_dir / background.STATE_FILE).write_text(json.dumps(legacy))
    assert background.stop(state_dir) is not None
    assert not process_alive(state.process)


def served_model_root(source: Path, root: Path) -> Path:
    """A model root of its own holding version 1 (Railyard's server serves only inside its root)."""
    shutil.copytree(source / MODEL_NAME / "1", root / MODEL_NAME / "1")
    return root


def test_railyards_server_reloads_only_with_its_token_and_only_inside_its_model_root(model_root, tmp_path):
    root = served_model_root(model_root, tmp_path / "models")
    config_path = root / "models.config"
    write_config_atomically(config_path, model_config(root, {1}, {"stable": 1}))
    state_dir = tmp_path / "state"
    state = background.ensure_local_server(state_dir, config_path, rest_port=0, grpc_port=0)
    try:
        token_file = state_dir / background.TOKEN_FILE
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = background.reload_token(state_dir)
        applied = config_path.read_text()
        anonymous = ServingClient(state.grpc_target, state.rest_url, attempts=1)
        railyard = ServingClient(state.grpc_target, state.rest_url, attempts=1, reload_token=token)
        guessed = ServingClient(state.grpc_target, state.rest_url, attempts=1, reload_token="guessed")

        for client in (anonymous, guessed):
            with pytest.raises(ServingError) as refused:
                client.reload_config(model_config(root, {1}, {}))
            assert refused.value.code == "UNAUTHENTICATED"

        (root / "elsewhere").symlink_to(model_root)  # a link out of the root is outside it too
        for outside in (model_root, root / "elsewhere"):
            with pytest.raises(ServingError, match="outside the model root") as refused:
                railyard.reload_config(model_config(outside, {1, 2}, {"stable": 2}))
            assert refused.value.code == "INVALID_ARGUMENT"
        assert config_path.read_text() == applied  # nothing refused was persisted
        assert railyard.label_version(MODEL_NAME, "stable") == 1  # and the labels are untouched

        railyard.reload_config(model_config(root, {1}, {"stable": 1, "canary": 1}))
        assert railyard.label_version(MODEL_NAME, "canary") == 1
    finally:
        background.stop(state_dir)


def test_a_token_file_others_can_read_is_refused(tmp_path):
    background.reload_token(tmp_path)
    (tmp_path / background.TOKEN_FILE).chmod(0o644)
    with pytest.raises(background.LocalServerError, match="readable by others"):
        background.reload_token(tmp_path)


# -- limits on what one REST request may cost -----------------------------------------------------

LIMITS = RestLimits(max_body_bytes=256 * 1024, max_instances=50, read_timeout_s=1.0, max_connections=4)
PREDICT_PATH = f"{MODEL_PATH}/labels/stable:predict"


@pytest.fixture
def limited_server(start_server, model_root):
    return start_server(model_config(model_root, {1}, {"stable": 1}), rest_limits=LIMITS)


def raw_request(server, head: str, body: bytes = b"", *, wait_s: float = 10.0) -> tuple[int, dict]:
    """Send exactly these bytes (a lying Content-Length included); the status and JSON answer."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=wait_s) as connection:
        connection.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status_line, _, rest_of_it = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest_of_it.partition(b"\r\n\r\n")[2])


def post_head(length) -> str:
    return f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {length}"


@pytest.mark.parametrize(
    ("make_request", "status", "message"),
    [
        (lambda: (post_head(300 * 1024), b"x" * 300 * 1024), 413, "exceeds the limit of 262144 bytes"),
        (lambda: (post_head(-1), b""), 400, "Malformed Content-Length: '-1'"),
        (lambda: (post_head("abc"), b""), 400, "Malformed Content-Length: 'abc'"),
        (lambda: (post_head(100), b'{"instances": ['), 408, "did not arrive within 1 s"),  # the rest never comes
    ],
    ids=["body too large", "negative length", "length not a number", "body shorter than its length"],
)
def test_malformed_or_oversized_requests_are_answered_and_predictions_go_on(
    limited_server, make_request, status, message
):
    head, body = make_request()
    answered = {}
    worker = threading.Thread(
        target=lambda: answered.update(zip(("status", "answer"), raw_request(limited_server, head, body)))
    )
    worker.start()
    assert predict(limited_server, "/labels/stable")  # a normal request meanwhile
    worker.join(timeout=30)
    assert answered["status"] == status and message in answered["answer"]["error"]


def test_too_many_instances_and_too_deep_json_are_refused(limited_server):
    many = {"instances": [{"userId": 1, "movieId": 1}] * (LIMITS.max_instances + 1)}
    assert rest(limited_server, "POST", PREDICT_PATH, many) == (
        413,
        {"error": f"{LIMITS.max_instances + 1} instances in one request; the limit is {LIMITS.max_instances}"},
    )
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = rest(limited_server, "POST", PREDICT_PATH, deep)
    assert status == 400 and "nested too deeply" in answer["error"]
    ragged = {"instances": [{"userId": [[[[1]]]] * 1, "movieId": 1}]}
    assert rest(limited_server, "POST", PREDICT_PATH, ragged)[0] == 400
    assert predict(limited_server, "/labels/stable")


def test_connections_beyond_the_limit_get_503_and_stalled_ones_are_dropped(limited_server):
    stalled = []
    for _ in range(LIMITS.max_connections):
        stalled.append(socket.create_connection(("127.0.0.1", limited_server.rest_port)))
        time.sleep(0.05)  # accepted one after the other
    try:
        status, answer = raw_request(limited_server, f"GET {MODEL_PATH} HTTP/1.1\r\nHost: x", wait_s=5)
        assert status == 503 and "connection limit" in answer["error"]
        time.sleep(LIMITS.read_timeout_s + 0.5)  # the stalled connections time out and free their threads
        assert predict(limited_server, "/labels/stable")
    finally:
        for connection in stalled:
            connection.close()


# -- TF Serving's Prometheus metrics (--monitoring_config_file) -----------------------------------

METRICS_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
WARMUP_RECORDS = ":tensorflow:serving:model_warmup_records_read"


def monitoring_file(folder: Path, text: str) -> Path:
    path = folder / "monitoring.config"
    path.write_text(text)
    return path


def scrape(rest_url: str) -> dict:
    """GET the metrics page as Prometheus does; its metric families by name."""
    with urllib.request.urlopen(rest_url + METRICS_PATH, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def request_counts(families: dict) -> dict:
    return {(s.labels["model_name"], s.labels["status"]): s.value for s in families[REQUEST_COUNT].samples}


def histograms(family, *label_names: str) -> dict:
    """{label values: {"buckets": [(le, cumulative count)...], "count": n, "sum": s}}."""
    found: dict = {}
    for sample in family.samples:
        entry = found.setdefault(tuple(sample.labels[name] for name in label_names), {"buckets": []})
        part = sample.name.removeprefix(family.name)
        if part == "_bucket":
            entry["buckets"].append((sample.labels["le"], sample.value))
        else:
            entry[part.removeprefix("_")] = sample.value
    return found


def test_prometheus_metrics_count_and_time_requests_like_tf_serving(start_server, model_root, tmp_path):
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    root = served_model_root(model_root, tmp_path / "models")
    version_dir = root / MODEL_NAME / "1"
    write_warmup_requests(version_dir, MODEL_NAME, GOLDEN_INSTANCES)
    monitoring = monitoring_file(tmp_path, f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}')
    server = start_server(model_config(root, {1}, {"stable": 1}), monitoring_config_file=monitoring)
    assert server.metrics_url == f"{server.rest_url}{METRICS_PATH}"

    predict(server)
    predict(server, "/labels/stable")
    wrong_type = {"instances": [{"userId": "six", "movieId": 1}]}
    assert rest(server, "POST", f"{MODEL_PATH}:predict", wrong_type)[0] == 400
    assert rest(server, "GET", MODEL_PATH)[0] == 200  # TF Serving counts every REST API call
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        stub.Predict(build_predict_request(MODEL_NAME, GOLDEN_INSTANCES), timeout=30)
        for model, label, code in ((MODEL_NAME, "nope", "INVALID_ARGUMENT"), ("nope", None, "NOT_FOUND")):
            with pytest.raises(grpc.RpcError) as error:
                stub.Predict(build_predict_request(model, GOLDEN_INSTANCES, label=label), timeout=30)
            assert error.value.code() == grpc.StatusCode[code]

    families = scrape(server.rest_url)
    assert request_counts(families) == {
        (MODEL_NAME, "OK"): 4,
        (MODEL_NAME, "INVALID_ARGUMENT"): 2,
        ("nope", "NOT_FOUND"): 1,
    }
    # Latency in microseconds, of the requests that succeeded (as TF Serving records it).
    assert families[REQUEST_LATENCY].type == "histogram"
    latency = histograms(families[REQUEST_LATENCY], "model_name", "API", "entrypoint")
    assert {labels: histogram["count"] for labels, histogram in latency.items()} == {
        (MODEL_NAME, "predict", "REST"): 2,
        (MODEL_NAME, "", "REST"): 1,
        (MODEL_NAME, "Predict", "GRPC"): 1,
    }
    for histogram in latency.values():
        bounds, counts = zip(*histogram["buckets"])
        assert bounds[:3] == ("10", "18", "32.4") and bounds[-1] == "+Inf" and len(bounds) == 34
        assert list(counts) == sorted(counts) and counts[-1] == histogram["count"]
        assert histogram["sum"] > 0
    warmup = histograms(families[WARMUP_LATENCY], "model_path", "status")
    assert {labels: histogram["count"] for labels, histogram in warmup.items()} == {(str(version_dir), "OK"): 1}
    assert [(s.labels["model_path"], s.value) for s in families[WARMUP_RECORDS].samples] == [(str(version_dir), 1)]


def test_without_an_enabled_monitoring_config_the_metrics_path_is_not_found(contract_server, tmp_path):
    assert contract_server.metrics_url is None
    assert rest(contract_server, "GET", METRICS_PATH)[0] == 404
    disabled = monitoring_file(tmp_path, f'prometheus_config {{ enable: false path: "{METRICS_PATH}" }}')
    assert read_monitoring_config(disabled) is None
    assert read_monitoring_config(monitoring_file(tmp_path, "")) is None  # TF Serving's defaults: off
    assert read_monitoring_config(monitoring_file(tmp_path, "prometheus_config { enable: true }")) == METRICS_PATH


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prometheus_config { enabled: true }", 'has no field named "enabled"'),
        ("prometheus_config { enable: yes }", 'Expected "true" or "false"'),
        ('prometheus_config { enable: true path: "/metrics"', "Expected"),
        ('prometheus_config { enable: true path: "metrics" }', "must start with '/'"),
    ],
    ids=["unknown field", "not a bool", "unclosed", "relative path"],
)
def test_a_malformed_monitoring_config_stops_the_start(start_server, model_root, tmp_path, text, message):
    broken = monitoring_file(tmp_path, text)
    with pytest.raises(ValueError, match=re.escape(message)) as refused:
        start_server(model_config(model_root, {1}, {}), monitoring_config_file=broken)
    assert str(broken) in str(refused.value)


def test_a_missing_monitoring_config_stops_the_start(start_server, model_root, tmp_path):
    with pytest.raises(ValueError, match="cannot read the monitoring config"):
        start_server(model_config(model_root, {1}, {}), monitoring_config_file=tmp_path / "missing.config")
