"""Clients for TF Serving (the real image or the local stand-in): reloads, status, predictions.

gRPC for the model service and for ``Predict``; REST for predictions and metadata as HTTP
clients send them. Connection failures and UNAVAILABLE answers are retried with backoff, then
reported naming the endpoint. TF Serving's own error messages are passed on untouched.
Transport only: which versions and labels to serve is the release's business (infra/rollout/).
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
from typing import TYPE_CHECKING, Any, TypeVar

from infra.tfserving.protocol import (
    AVAILABLE,
    END,
    NO_LABELS_YET,
    RELOAD_TOKEN_HEADER,
    VersionStatus,
    build_predict_request,
)
from railyard.contract import SIGNATURE_NAME
from railyard.errors import RailyardError

if TYPE_CHECKING:
    import numpy as np
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class ServingError(RailyardError):
    """TF Serving answered with an error; ``code`` is its status code name when known."""

    next_step = "production is unchanged; run again once serving is back (a published version is picked up)"

    def __init__(self, message: str, *, code: str | None = None, details: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.details = details


class ServingUnavailableError(ServingError):
    """The endpoint did not answer (refused, reset, UNAVAILABLE) after every retry."""


class ModelLoadError(ServingError):
    """A version ended in END instead of AVAILABLE (usually: its load failed)."""

    next_step = "the version was rejected (TF Serving could not load it); stable is unchanged"


class ServingClient:
    def __init__(
        self,
        grpc_target: str,
        rest_url: str,
        *,
        timeout_s: float = 30.0,
        attempts: int = 5,
        backoff_s: float = 0.5,
        reload_token: str | None = None,
    ) -> None:
        """``reload_token``: sent with config reloads (Railyard's local server requires it)."""
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.grpc_target = grpc_target
        self.rest_url = rest_url.rstrip("/")
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self._reload_metadata = ((RELOAD_TOKEN_HEADER, f"Bearer {reload_token}"),) if reload_token else None
        self._channel = None  # opened on first gRPC call: the gRPC protos import TensorFlow

    # -- model service (gRPC) -------------------------------------------------------------

    def reload_config(self, config: ModelServerConfig) -> None:
        from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

        stub = model_service_pb2_grpc.ModelServiceStub(self._grpc_channel())
        request = model_management_pb2.ReloadConfigRequest(config=config)
        self._grpc_call(
            "HandleReloadConfigRequest",
            lambda: stub.HandleReloadConfigRequest(request, timeout=self.timeout_s, metadata=self._reload_metadata),
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
        instances: Sequence[Mapping[str, Any]] | Mapping[str, np.ndarray],
        version: int | None = None,
        label: str | None = None,
        signature_name: str = SIGNATURE_NAME,
    ) -> dict[str, np.ndarray]:
        """``PredictionService/Predict`` (row-format instances or one array per input): every
        output tensor as a numpy array."""
        return self.predict_grpc_versioned(model, instances, version, label, signature_name)[0]

    def predict_grpc_versioned(
        self,
        model: str,
        instances: Sequence[Mapping[str, Any]] | Mapping[str, np.ndarray],
        version: int | None = None,
        label: str | None = None,
        signature_name: str = SIGNATURE_NAME,
    ) -> tuple[dict[str, np.ndarray], int | None]:
        """``predict_grpc``'s outputs and the version that answered (the response's
        ``model_spec.version``: what a label pointed at for this very call; None if not sent)."""
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        stub = prediction_service_pb2_grpc.PredictionServiceStub(self._grpc_channel())
        request = build_predict_request(model, instances, version=version, label=label, signature_name=signature_name)
        response = self._grpc_call("Predict", lambda: stub.Predict(request, timeout=self.timeout_s))
        outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
        answered = response.model_spec.version.value if response.model_spec.HasField("version") else None
        return outputs, answered

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
