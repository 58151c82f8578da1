"""Clients for TF Serving (the real image or the local stand-in): reloads, status, predictions.

gRPC for the model service and for ``Predict``; REST for predictions and metadata as HTTP
clients send them. Connection failures and UNAVAILABLE answers are retried with backoff, then
reported naming the endpoint. TF Serving's own error messages are passed on untouched.

The label moves of DESIGN.md (load first, then label: tensorflow/serving#1230) are plain
functions at the bottom: ``load_version_as_canary``, ``promote_version``, ``unload_version``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from infra.tfserving_config import CANARY, STABLE, render_model_config, served_versions
from railyard.model import SIGNATURE_NAME

if TYPE_CHECKING:
    import numpy as np
    from tensorflow_serving.apis.predict_pb2 import PredictRequest
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

log = logging.getLogger(__name__)

# ModelVersionStatus.State names (get_model_status.proto).
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
_T = TypeVar("_T")


# server_core.cc's UNAVAILABLE answer to a label before any config has set labels.
NO_LABELS_YET = "Model labels does not init yet."


class ServingError(RuntimeError):
    """TF Serving answered with an error; ``code`` is its status code name when known."""

    def __init__(self, message: str, *, code: str | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class ServingUnavailableError(ServingError):
    """The endpoint did not answer (refused, reset, UNAVAILABLE) after every retry."""


class ModelLoadError(ServingError):
    """A version ended in END instead of AVAILABLE (usually: its load failed)."""


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: the version's state and its load/unload status."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


class ServingClient:
    def __init__(
        self,
        grpc_target: str,
        rest_url: str,
        *,
        timeout_s: float = 30.0,
        attempts: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.grpc_target = grpc_target
        self.rest_url = rest_url.rstrip("/")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._channel = None  # opened on first gRPC call: the gRPC protos import TensorFlow

    # -- model service (gRPC) -------------------------------------------------------------

    def reload_config(self, config: ModelServerConfig) -> None:
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        stub = model_service_pb2_grpc.ModelServiceStub(self._grpc_channel())
        request = model_management_pb2.ReloadConfigRequest(config=config)
        self._grpc_call(
            "HandleReloadConfigRequest", lambda: stub.HandleReloadConfigRequest(request, timeout=self.timeout_s)
        )

    def model_status(self, model: str, version: int | None = None) -> list[VersionStatus]:
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        stub = model_service_pb2_grpc.ModelServiceStub(self._grpc_channel())
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = version
        response = self._grpc_call("GetModelStatus", lambda: stub.GetModelStatus(request, timeout=self.timeout_s))
        states = get_model_status_pb2.ModelVersionStatus.State
        return [
            VersionStatus(
                version=item.version,
                state=states.Name(item.state),
                error_code=_error_code_name(item.status.error_code),
                error_message=item.status.error_message,
            )
            for item in response.model_version_status
        ]

    def wait_until_available(
        self, model: str, version: int, timeout_s: float = 360.0, poll_s: float = 0.5
    ) -> VersionStatus:
        """Poll GetModelStatus until AVAILABLE; fail fast when the load ended in an error.

        TF Serving retries a failed load (5 x 60 s by default, the state stays LOADING), so the
        default timeout leaves room for that. NOT_FOUND and a stale END without error are
        polled through: TF Serving picks a reloaded config up asynchronously.
        """
        deadline = time.monotonic() + timeout_s
        last = "not known to the server yet"
        while True:
            try:
                (status,) = self.model_status(model, version)
            except ServingError as exc:
                if exc.code != "NOT_FOUND":
                    raise
            else:
                if status.state == AVAILABLE:
                    return status
                if status.state == END and status.error_code != "OK":
                    raise ModelLoadError(
                        f"version {version} of model {model!r} failed to load on {self.grpc_target}: "
                        f"{status.error_code}: {status.error_message}",
                        code=status.error_code,
                        details=status.error_message,
                    )
                last = f"state {status.state}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"version {version} of model {model!r} was not AVAILABLE on {self.grpc_target} "
                    f"after {timeout_s:g} s (last seen: {last}); is the version in the served config "
                    "and is its directory complete under the model's base_path?"
                )
            time.sleep(poll_s)

    # -- prediction service ----------------------------------------------------------------

    def predict_rest(
        self,
        model: str,
        instances: Sequence[Mapping[str, Any]],
        version: int | None = None,
        label: str | None = None,
        signature_name: str | None = None,
    ) -> list:
        """``POST /v1/models/<m>[/versions/<v>|/labels/<l>]:predict`` in row format: the predictions."""
        body: dict[str, Any] = {"instances": list(instances)}
        if signature_name:
            body["signature_name"] = signature_name
        answer = self._rest("POST", f"{_model_path(model, version, label)}:predict", body)
        return answer["predictions"]

    def predict_grpc(
        self,
        model: str,
        instances: Sequence[Mapping[str, Any]],
        version: int | None = None,
        label: str | None = None,
        signature_name: str = SIGNATURE_NAME,
    ) -> dict[str, np.ndarray]:
        """``PredictionService/Predict``: every output tensor as a numpy array."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(self._grpc_channel())
        request = build_predict_request(model, instances, version=version, label=label, signature_name=signature_name)
        response = self._grpc_call("Predict", lambda: stub.Predict(request, timeout=self.timeout_s))
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}

    def metadata_rest(self, model: str, version: int | None = None) -> dict:
        """``GET /v1/models/<m>[/versions/<v>]/metadata`` as TF Serving returns it."""
        return self._rest("GET", f"{_model_path(model, version, None)}/metadata")

    def label_version(self, model: str, label: str) -> int | None:
        """The version a label points at, as the server resolves it (None: the label is not served).

        Model status ignores labels (get_model_status_impl.cc), but metadata resolves them.
        """
        try:
            metadata = self._rest("GET", f"{_model_path(model, None, label)}/metadata")
        except ServingError as exc:
            if exc.code in ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"):
                return None
            if exc.details.startswith(NO_LABELS_YET):  # a server that has loaded no config with labels
                return None
            raise
        return int(metadata["model_spec"]["version"])

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------

    def _grpc_channel(self):
        import grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_target)
        return self._channel

    def _grpc_call(self, method: str, call: Callable[[], _T]) -> _T:
        import grpc

        endpoint = f"gRPC {self.grpc_target} ({method})"

        def attempt() -> _T:
            try:
                return call()
            except grpc.RpcError as exc:
                code, details = exc.code().name, exc.details() or ""
                error_class = ServingUnavailableError if code == "UNAVAILABLE" else ServingError
                message = f"{method} failed at {self.grpc_target}: {code}: {details}"
                raise error_class(message, code=code, details=details) from exc

        return self._retrying(endpoint, attempt)

    def _rest(self, method: str, path: str, body: dict | None = None) -> dict:
        url = f"{self.rest_url}{path}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(url, data=data, method=method, headers=headers)

        def attempt() -> dict:
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                message = _rest_error_message(exc)
                error_class = ServingUnavailableError if exc.code == 503 else ServingError
                code = _HTTP_CODES.get(exc.code)
                text = f"{method} {url} failed: HTTP {exc.code}: {message}"
                raise error_class(text, code=code, details=message) from exc
            except (urllib.error.URLError, ConnectionError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ServingUnavailableError(f"{method} {url} failed: {reason}", code="UNAVAILABLE") from exc

        return self._retrying(f"REST {self.rest_url}", attempt)

    def _retrying(self, endpoint: str, attempt: Callable[[], _T]) -> _T:
        delay = self.backoff_s
        for number in itertools.count(1):
            try:
                return attempt()
            except ServingUnavailableError as exc:
                if number == self.attempts:
                    raise ServingUnavailableError(
                        f"TF Serving at {endpoint} is unavailable after {self.attempts} attempt(s): {exc}",
                        code="UNAVAILABLE",
                        details=exc.details,
                    ) from exc
                log.warning("TF Serving at %s unavailable (attempt %d/%d): %s", endpoint, number, self.attempts, exc)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


# http_server.cc ToHTTPStatusCode, read backwards (400 is also FAILED_PRECONDITION / OUT_OF_RANGE).
_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    409: "ABORTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}


def _rest_error_message(exc: urllib.error.HTTPError) -> str:
    raw = exc.read()
    try:
        return json.loads(raw)["error"]
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace").strip() or exc.reason


def _error_code_name(code: int) -> str:
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Name(code)


def _model_path(model: str, version: int | None, label: str | None) -> str:
    if version is not None and label is not None:
        raise ValueError("give a model version or a version label, not both")
    path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{int(version)}"
    elif label is not None:
        path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return path


def instance_columns(instances: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Row-format instances (one dict per example) as one batched array per input.

    Python ints become int64 and floats float32, the dtypes a TF model usually declares.
    """
    import numpy as np

    if not instances:
        raise ValueError("no instances to send")
    keys = set(instances[0])
    for index, instance in enumerate(instances):
        if set(instance) != keys:
            raise ValueError(f"instance {index} has inputs {sorted(instance)}, expected {sorted(keys)}")
    columns = {}
    for key in sorted(keys):
        column = np.asarray([instance[key] for instance in instances])
        columns[key] = column.astype(np.float32) if column.dtype == np.float64 else column
    return columns


def build_predict_request(
    model: str,
    instances: Sequence[Mapping[str, Any]],
    *,
    version: int | None = None,
    label: str | None = None,
    signature_name: str = SIGNATURE_NAME,
) -> PredictRequest:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if version is not None and label is not None:
        raise ValueError("give a model version or a version label, not both")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = version
    elif label is not None:
        request.model_spec.version_label = label
    for name, column in instance_columns(instances).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(column))
    return request


# -- label moves (DESIGN.md: load first, then move the label) --------------------------------


def load_version_as_canary(
    client: ServingClient,
    model: str,
    base_path: str | Path,
    version: int,
    known_good: ModelServerConfig,
    *,
    timeout_s: float = 360.0,
    poll_s: float = 0.5,
) -> ModelServerConfig:
    """Serve ``version`` under the ``canary`` label next to the ``stable`` one; return the new config.

    Reload 1 adds the version with the existing labels only (TF Serving refuses a label on a
    version that is not AVAILABLE yet), then the version is awaited, then reload 2 points
    ``canary`` at it. Afterwards exactly the labelled versions are served (an older canary is
    unloaded). On any failure the known-good config is sent again, because TF Serving keeps a
    rejected config as its current one; then the error is raised.
    """
    versions, labels = served_versions(known_good, model)
    stable = labels.get(STABLE)
    final_labels = {CANARY: version} | ({STABLE: stable} if stable is not None else {})

    def move() -> ModelServerConfig:
        client.reload_config(render_model_config(model, base_path, versions | {version}, labels, base=known_good))
        client.wait_until_available(model, version, timeout_s=timeout_s, poll_s=poll_s)
        final = render_model_config(model, base_path, set(final_labels.values()), final_labels, base=known_good)
        return _send(client, final)

    return _or_restore(client, known_good, move)


def promote_version(
    client: ServingClient, model: str, base_path: str | Path, version: int, known_good: ModelServerConfig
) -> ModelServerConfig:
    """Point ``stable`` (and ``canary``) at an already served version; the old stable is unloaded."""
    versions, _ = served_versions(known_good, model)
    if version not in versions:
        raise ValueError(f"version {version} of model {model!r} is not served; load it as canary first")
    labels = {STABLE: version, CANARY: version}
    config = render_model_config(model, base_path, {version}, labels, base=known_good)
    return _or_restore(client, known_good, lambda: _send(client, config))


def unload_version(
    client: ServingClient, model: str, base_path: str | Path, version: int, known_good: ModelServerConfig
) -> ModelServerConfig:
    """Stop serving a (canary) version; ``canary`` falls back to the stable version, if any."""
    versions, labels = served_versions(known_good, model)
    stable = labels.get(STABLE)
    if stable == version:
        raise ValueError(f"version {version} is the stable version of model {model!r}; promote another version first")
    kept = {label: target for label, target in labels.items() if target != version}
    if labels.get(CANARY) == version and stable is not None:
        kept[CANARY] = stable
    config = render_model_config(model, base_path, versions - {version}, kept, base=known_good)
    return _or_restore(client, known_good, lambda: _send(client, config))


def _send(client: ServingClient, config: ModelServerConfig) -> ModelServerConfig:
    client.reload_config(config)
    return config


def _or_restore(client: ServingClient, known_good: ModelServerConfig, change: Callable[[], _T]) -> _T:
    try:
        return change()
    except Exception as exc:
        try:
            client.reload_config(known_good)
        except ServingError as restore_error:
            exc.add_note(f"re-sending the known-good config also failed: {restore_error}")
        else:
            exc.add_note("the known-good config was sent again")
        raise
