"""One loaded SavedModel version: its SignatureDefs and a thread-safe ``predict``."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

import numpy as np

from infra.local_server.errors import StatusError, status_from_exception
from infra.tfserving.warmup import WARMUP_FILE, read_warmup_requests
from railyard.contract import SIGNATURE_NAME

SERVE_TAG = "serve"
# Told of each warm-up replay: (model path, status as Status::ToString, microseconds, records replayed).
WarmupRecorder = Callable[[str, str, int, int], None]


class Servable:
    def __init__(self, path: Path, on_warmup: WarmupRecorder | None = None) -> None:
        """Load like TF Serving's SavedModel loader: the ``serve`` meta graph, then the warmup replay."""
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        path = Path(path)
        graph_file = path / "saved_model.pb"
        if not graph_file.is_file():
            raise StatusError(
                "NOT_FOUND", f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}"
            )
        try:
            saved_model = saved_model_pb2.SavedModel.FromString(graph_file.read_bytes())
            graphs = [graph for graph in saved_model.meta_graphs if SERVE_TAG in graph.meta_info_def.tags]
            if not graphs:
                message = f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }}"
                raise StatusError("NOT_FOUND", message)
            self.signature_defs = dict(graphs[0].signature_def)
            self._functions = tf.saved_model.load(str(path), tags=[SERVE_TAG]).signatures
            self._warm_up(path, on_warmup)
        except Exception as exc:
            raise status_from_exception(exc) from exc

    def _warm_up(self, path: Path, on_warmup: WarmupRecorder | None) -> None:
        """saved_model_warmup_util.cc: replay the warm-up requests (none without the file)."""
        import tensorflow as tf

        if not (path / WARMUP_FILE).is_file():
            return
        started, replayed, status = time.monotonic(), 0, "OK"
        try:
            for request in read_warmup_requests(path):
                inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
                self.predict(request.model_spec.signature_name, inputs, request.output_filter)
                replayed += 1
        except Exception as exc:
            status = str(status_from_exception(exc))
            raise
        finally:
            if on_warmup is not None:
                on_warmup(str(path), status, int((time.monotonic() - started) * 1e6), replayed)

    def input_dtypes(self, signature_name: str) -> dict:
        """Input name -> tf.DType; REST requests are parsed against these."""
        import tensorflow as tf

        name = signature_name or SIGNATURE_NAME
        if name not in self.signature_defs:
            # http_rest_api_handler.cc GetInfoMap (the gRPC path says FAILED_PRECONDITION instead).
            raise StatusError("INVALID_ARGUMENT", f'Serving signature name: "{name}" not found in signature def')
        inputs = self.signature_defs[name].inputs
        return {key: tf.dtypes.as_dtype(info.dtype) for key, info in inputs.items()}

    def predict(
        self, signature_name: str, inputs: Mapping[str, np.ndarray], output_filter: Collection[str] = ()
    ) -> dict[str, np.ndarray]:
        import tensorflow as tf

        name = signature_name or SIGNATURE_NAME
        signature = self.signature_defs.get(name)
        if signature is None or name not in self._functions:
            raise StatusError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
        _check_input_names(set(inputs), set(signature.inputs))
        for alias in output_filter:
            if alias not in signature.outputs:
                raise StatusError(
                    "INVALID_ARGUMENT",
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                    f"{{{','.join(sorted(signature.outputs))}}}.",
                )
        arguments = {}
        for index, key in enumerate(sorted(inputs)):
            expected = tf.dtypes.as_dtype(signature.inputs[key].dtype)
            given = tf.string if inputs[key].dtype == object else tf.dtypes.as_dtype(inputs[key].dtype)
            if given != expected:
                raise StatusError(
                    "INVALID_ARGUMENT", f"Expects arg[{index}] to be {expected.name} but {given.name} is provided"
                )
            arguments[key] = tf.convert_to_tensor(inputs[key], dtype=expected)
        try:
            outputs = self._functions[name](**arguments)
        except Exception as exc:
            raise status_from_exception(exc) from exc
        wanted = output_filter or signature.outputs
        return {alias: outputs[alias].numpy() for alias in wanted}


def _check_input_names(sent: set[str], expected: set[str]) -> None:
    # predict_util.cc VerifyRequestInputsSize.
    if sent != expected:
        raise StatusError(
            "INVALID_ARGUMENT",
            f"input size does not match signature: {len(sent)}!={len(expected)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
            f"Missing but required: {{{','.join(sorted(expected - sent))}}}.",
        )
