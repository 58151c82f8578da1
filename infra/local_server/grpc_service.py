"""TF Serving's gRPC services on the generated servicers of the tensorflow-serving-api wheel.

``PredictionService``: Predict and GetModelMetadata (Classify, Regress and MultiInference
answer UNIMPLEMENTED); ``ModelService``: GetModelStatus and HandleReloadConfigRequest
(model_servers/model_service_impl.cc, prediction_service_impl.cc).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from infra.local_server.core import ServerCore
from infra.local_server.errors import StatusError
from infra.local_server.monitoring import ServingMetrics
from infra.local_server.protos import SIGNATURE_DEF_FIELD, metadata_response, model_spec, status_response, tensor_proto
from infra.tfserving.protocol import RELOAD_TOKEN_HEADER
from railyard.contract import SIGNATURE_NAME

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def _answer(
    context: grpc.ServicerContext,
    method: str,
    produce: Callable[[], _T],
    on_done: Callable[[str], None] | None = None,
) -> _T:
    """``produce()``'s answer, or its error as the call's status; ``on_done`` is told the
    status code name either way."""
    code = "UNKNOWN"
    try:
        answer = produce()
        code = "OK"
        return answer
    except StatusError as exc:
        code = exc.code
        context.abort(grpc.StatusCode[exc.code], exc.message)
    except Exception as exc:  # a bug here must reach the caller as an error, not a hang
        log.exception("gRPC %s failed", method)
        code = "INTERNAL"
        context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    finally:
        if on_done is not None:
            on_done(code)
    raise AssertionError("context.abort raises")


def _version_choice(spec) -> tuple[int | None, str | None]:
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    return version, spec.version_label if choice == "version_label" else None


def _require_model_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise StatusError("INVALID_ARGUMENT", "Missing ModelSpec")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core: ServerCore, metrics: ServingMetrics | None = None) -> None:
        self._core = core
        self._metrics = metrics

    def Predict(self, request, context):  # noqa: N802 - the generated servicer's names
        started = time.monotonic()

        def record(code: str) -> None:
            # prediction_service_impl.cc: every Predict counted, the latency of those that succeed.
            if self._metrics is not None:
                latency_us = int((time.monotonic() - started) * 1e6)
                self._metrics.record_request(
                    request.model_spec.name, code, api="Predict", entrypoint="GRPC", latency_us=latency_us
                )

        def predict():
            import tensorflow as tf

            spec = request.model_spec
            number, servable = self._core.servable(spec.name, *_version_choice(spec))
            inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
            outputs = servable.predict(spec.signature_name, inputs, list(request.output_filter))
            response = predict_pb2.PredictResponse(
                model_spec=model_spec(spec.name, number, spec.signature_name or SIGNATURE_NAME)
            )
            for alias, array in outputs.items():
                response.outputs[alias].CopyFrom(tensor_proto(array))
            return response

        return _answer(context, "Predict", predict, record)

    def GetModelMetadata(self, request, context):  # noqa: N802
        def metadata():
            # get_model_metadata_impl.cc
            _require_model_spec(request)
            if not request.metadata_field:
                raise StatusError(
                    "INVALID_ARGUMENT", "GetModelMetadataRequest must specify at least one metadata_field"
                )
            for field in request.metadata_field:
                if field != SIGNATURE_DEF_FIELD:
                    raise StatusError("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
            spec = request.model_spec
            number, servable = self._core.servable(spec.name, *_version_choice(spec))
            return metadata_response(spec.name, number, servable)

        return _answer(context, "GetModelMetadata", metadata)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core: ServerCore, reload_token: str | None) -> None:
        self._core = core
        self._reload_token = reload_token

    def GetModelStatus(self, request, context):  # noqa: N802
        def status():
            _require_model_spec(request)
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            return status_response(self._core.model_status(spec.name, version))

        return _answer(context, "GetModelStatus", status)

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802
        def reload():
            self._check_reload_token(context)
            if request.config.WhichOneof("config") != "model_config_list":
                raise StatusError(
                    "INVALID_ARGUMENT",
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported",
                )
            self._core.reload_config(request.config)
            response = model_management_pb2.ReloadConfigResponse()
            response.status.SetInParent()
            return response

        return _answer(context, "HandleReloadConfigRequest", reload)

    def _check_reload_token(self, context: grpc.ServicerContext) -> None:
        """Only the holder of the state folder's token may change what is served (TF Serving
        itself has no authentication: it must sit on a private network)."""
        if self._reload_token is None:
            return
        sent = dict(context.invocation_metadata()).get(RELOAD_TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {self._reload_token}".encode()):
            raise StatusError(
                "UNAUTHENTICATED",
                "config reloads need the server's reload token (reload.token in its state folder): Railyard "
                "sends it when RAILYARD_HOME is the home whose `railyard serve` started this server",
            )


def add_services(
    server: grpc.Server, core: ServerCore, reload_token: str | None, metrics: ServingMetrics | None = None
) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, reload_token), server)
