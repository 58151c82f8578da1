"""TF Serving's REST API (the subset the pipeline uses), on the stdlib HTTP server.

Paths, JSON formats and error texts follow tensorflow_serving/model_servers/
http_rest_api_handler.cc, http_rest_api_util.cc and tensorflow_serving/util/json_tensor.cc.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np

from infra.local_server.core import ServerCore
from infra.local_server.errors import HTTP_STATUS, StatusError
from infra.local_server.monitoring import CONTENT_TYPE as METRICS_CONTENT_TYPE
from infra.local_server.monitoring import ServingMetrics
from infra.local_server.protos import metadata_json, status_json

log = logging.getLogger(__name__)
# A tensor nested deeper than this is refused (numpy stops at 64 dimensions; no model needs 32).
MAX_TENSOR_RANK = 32


@dataclass(frozen=True)
class RestLimits:
    """What one REST request may hold and how long the server waits for it."""

    max_body_bytes: int = 16 * 1024 * 1024
    max_instances: int = 10_000
    read_timeout_s: float = 30.0  # per socket read: a stalled client frees its thread after this
    max_connections: int = 64  # open connections served at once; more get 503 at once


class TooLarge(Exception):
    """The request exceeds a limit: 413, with a TF-Serving-style JSON error."""


# http_rest_api_util.cc kPredictionApiGegex / kModelStatusApiRegex.
_PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE
)


def handle_request(
    core: ServerCore, method: str, path: str, body: bytes = b"", limits: RestLimits = RestLimits()
) -> dict:
    """One REST call -> the JSON answer; errors raise StatusError (-> ``{"error": ...}``)."""
    match = (_PREDICT_PATH if method == "POST" else _STATUS_PATH).fullmatch(path)
    if method not in ("GET", "POST") or match is None:
        raise StatusError("INVALID_ARGUMENT", f"Malformed request: {method} {path}")
    name, version, label, tail = match.groups()
    name = urllib.parse.unquote(name or "")
    version = int(version) if version else None
    label = urllib.parse.unquote(label) if label else None
    if method == "POST":
        if tail.lower() != "predict":
            raise StatusError("UNIMPLEMENTED", f"the local server implements :predict only, not :{tail}")
        return _predict(core, name, version, label, body, limits)
    if not name:
        raise StatusError("INVALID_ARGUMENT", "Missing model name in request.")
    if tail:
        number, servable = core.servable(name, version, label)
        return metadata_json(name, number, servable)
    # get_model_status_impl.cc only looks at the version: a label path lists every version.
    return status_json(core.model_status(name, version))


def request_labels(method: str, path: str) -> tuple[str, str]:
    """The model name and API method a REST call is recorded under (http_rest_api_util.cc
    ParseModelInfo): ``predict`` (as the path spells it) for a POST, empty for a GET; an empty
    model name when the path does not parse."""
    match = (_PREDICT_PATH if method == "POST" else _STATUS_PATH).fullmatch(path)
    if method not in ("GET", "POST") or match is None:
        return "", ""
    name, _, _, tail = match.groups()
    return urllib.parse.unquote(name or ""), tail if method == "POST" else ""


def _predict(
    core: ServerCore, name: str, version: int | None, label: str | None, body: bytes, limits: RestLimits
) -> dict:
    document = parse_json_body(body)
    instances = document.get("instances")
    if isinstance(instances, list) and len(instances) > limits.max_instances:
        raise TooLarge(f"{len(instances)} instances in one request; the limit is {limits.max_instances}")
    signature_name = document.get("signature_name", "")
    _, servable = core.servable(name, version, label)
    row_format, inputs = request_tensors(document, servable.input_dtypes(signature_name))
    return response_json(servable.predict(signature_name, inputs), row_format=row_format)


def parse_json_body(body: bytes) -> dict:
    if not body.strip():
        raise StatusError("INVALID_ARGUMENT", "JSON Parse error: The document is empty")
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StatusError("INVALID_ARGUMENT", f"JSON Parse error: {exc}") from exc
    except RecursionError:
        raise StatusError("INVALID_ARGUMENT", "JSON Parse error: the document is nested too deeply") from None
    if not isinstance(document, dict):
        raise _format_error(document, "Is not object")
    if not isinstance(document.get("signature_name", ""), str):
        raise _format_error(document, "not formatted correctly. 'signature_name' key must be a string value.")
    return document


def request_tensors(document: Mapping[str, Any], dtypes: Mapping[str, Any]) -> tuple[bool, dict[str, np.ndarray]]:
    """json_tensor.cc FillPredictRequestFromJson: (row format?, input arrays) for the signature's inputs."""
    if "instances" in document and "inputs" in document:
        raise _format_error(
            document, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
        )
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise _format_error(document, "Excepting 'instances' to be an list/array")
        if not instances:
            raise _format_error(document, "No values in 'instances' array")
        return True, _from_instances(instances, dtypes)
    if "inputs" in document:
        return False, _from_inputs(document["inputs"], dtypes)
    raise StatusError("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key")


def _from_instances(instances: list, dtypes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    names = sorted(dtypes)
    by_name = _is_named(instances[0])
    if not by_name and len(names) > 1:
        raise StatusError(
            "INVALID_ARGUMENT",
            "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
            "tensorinfo_map",
        )
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for index, item in enumerate(instances):
        if by_name != _is_named(item):
            expected, got = ("object", "list") if by_name else ("value/list", "object")
            raise StatusError("INVALID_ARGUMENT", f"Expecting {expected} but got {got} at item {index} of input list")
        for key, value in item.items() if by_name else [(names[0], item)]:
            where = f"element: {index} key: {key}" if by_name else f"element: {index}"
            try:
                if key not in dtypes:
                    raise StatusError("INVALID_ARGUMENT", f"JSON object: does not have named input: {key}")
                array = _tensor(value, dtypes[key])
                if columns[key] and array.shape != columns[key][0].shape:
                    first_shape = list(columns[key][0].shape)
                    raise StatusError("INVALID_ARGUMENT", f"Expecting shape {first_shape} but got: {list(array.shape)}")
            except StatusError as exc:
                raise StatusError(
                    "INVALID_ARGUMENT", f"Failed to process {where} of 'instances' list. Error: {exc}"
                ) from exc
            columns[key].append(array)
        if by_name and set(item) != set(names):
            raise StatusError(
                "INVALID_ARGUMENT",
                f"Failed to process element: {index} of 'instances' list. JSON object: {_compact(item)} "
                f"keys must be equal to: {','.join(names)}",
            )
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def _from_inputs(inputs: Any, dtypes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    names = sorted(dtypes)
    if not _is_named(inputs):
        if len(names) > 1:
            raise StatusError(
                "INVALID_ARGUMENT",
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
                "tensorinfo_map",
            )
        return {names[0]: _tensor(inputs, dtypes[names[0]])}
    missing = [name for name in names if name not in inputs]
    if missing:
        raise StatusError("INVALID_ARGUMENT", f"Missing named input: {missing[0]} in 'inputs' object.")
    return {name: _tensor(inputs[name], dtypes[name]) for name in names}


def _tensor(value: Any, dtype) -> np.ndarray:
    """json_tensor.cc FillTensorProto: a dense (nested-list) JSON value of one dtype."""
    shape = []
    probe = value
    while isinstance(probe, list):
        if len(shape) == MAX_TENSOR_RANK:
            raise StatusError("INVALID_ARGUMENT", f"a tensor nested deeper than {MAX_TENSOR_RANK} levels")
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    leaves: list = []

    def walk(item: Any, level: int) -> None:
        if not isinstance(item, list):
            if level != len(shape):
                raise StatusError(
                    "INVALID_ARGUMENT",
                    f"JSON Value: {_compact(item)} found at incorrect level: {level + 1} in the JSON DOM. "
                    f"Expected at level: {len(shape)}",
                )
            leaves.append(_leaf(item, dtype))
            return
        if level >= len(shape):
            message = f"Encountered list at unexpected level: {level} expected < {len(shape)}"
            raise StatusError("INVALID_ARGUMENT", message)
        if len(item) != shape[level]:
            raise StatusError(
                "INVALID_ARGUMENT",
                f"Encountered list at unexpected size: {len(item)} at level: {level} expected size: {shape[level]}",
            )
        for element in item:
            walk(element, level + 1)

    walk(value, 0)
    return np.array(leaves, dtype=dtype.as_numpy_dtype).reshape(shape)


def _leaf(value: Any, dtype) -> Any:
    numpy_kind = np.dtype(dtype.as_numpy_dtype).kind
    if numpy_kind == "O":  # DT_STRING: text, or {"b64": ...} for binary
        if isinstance(value, str):
            return value.encode("utf-8")
        if _is_base64(value):
            return base64.b64decode(value["b64"])
    elif numpy_kind == "b":
        if isinstance(value, bool):
            return value
    elif numpy_kind in "iu":
        info = np.iinfo(dtype.as_numpy_dtype)
        if isinstance(value, int) and not isinstance(value, bool) and info.min <= value <= info.max:
            return value
    elif numpy_kind == "f":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    else:
        message = f"Conversion of JSON Value: {_compact(value)} to type: {_dtype_name(dtype)}"
        raise StatusError("UNIMPLEMENTED", message)
    raise StatusError(
        "INVALID_ARGUMENT",
        f"JSON Value: {_compact(value)} Type: {_json_type(value)} is not of expected type: {_dtype_name(dtype)}",
    )


def response_json(outputs: Mapping[str, np.ndarray], *, row_format: bool) -> dict:
    """json_tensor.cc MakeJsonFromTensors: one output -> its values; several -> keyed by name."""
    values = {name: _json_values(name, array) for name, array in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    batch = None
    for name, array in outputs.items():
        if array.ndim == 0:
            raise StatusError("INVALID_ARGUMENT", f"Tensor name: {name} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            message = f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            raise StatusError("INVALID_ARGUMENT", message)
        batch = array.shape[0]
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{name: rows[index] for name, rows in values.items()} for index in range(batch or 0)]}


def _json_values(name: str, array: np.ndarray) -> Any:
    if array.dtype == np.float32:
        # TF Serving writes a float32 with the fewest digits that read back to the same float.
        return array.astype(str).astype(np.float64).tolist()
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda raw: _text_or_base64(name, raw), otypes=[object])(array).tolist()
    return array.tolist()


def _text_or_base64(name: str, raw: bytes) -> Any:
    if not name.endswith("_bytes"):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(raw).decode("ascii")}


def _is_base64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_base64(value)


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "True" if value else "False"), (dict, "Object"), (list, "Array"), (str, "String")):
        if isinstance(value, kind):
            return name
    return "Null" if value is None else "Number"


def _dtype_name(dtype) -> str:
    """tensorflow::DataTypeString, e.g. DT_FLOAT -> float."""
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(dtype.as_datatype_enum)[3:].lower()


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _format_error(document: Any, message: str) -> StatusError:
    return StatusError("INVALID_ARGUMENT", f"JSON Value: {_compact(document)} {message}")


def make_handler(
    core: ServerCore, limits: RestLimits, metrics: ServingMetrics | None = None, metrics_path: str | None = None
) -> type[BaseHTTPRequestHandler]:
    """The REST API; with ``metrics_path``, also the Prometheus metrics at that exact path."""

    class RestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = limits.read_timeout_s  # socketserver sets it on the connection's socket

        def do_GET(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def _answer(self, method: str) -> None:
            started = time.monotonic()
            path = urllib.parse.urlsplit(self.path).path
            body = self._body()
            if body is None:
                return
            if metrics is not None and path == metrics_path:  # http_server.cc ProcessPrometheusRequest
                self._send_bytes(200, metrics.exposition(), METRICS_CONTENT_TYPE)
                return
            if not path.lower().startswith("/v1/"):
                self._send(404, {"error": f"Not found: {method} {path}"})
                return
            try:
                code, status, answer = "OK", 200, handle_request(core, method, path, body, limits)
            except StatusError as exc:
                code, status, answer = exc.code, HTTP_STATUS[exc.code], {"error": exc.message}
            except TooLarge as exc:
                code, status, answer = "RESOURCE_EXHAUSTED", 413, {"error": str(exc)}
            except Exception as exc:  # a bug here must not kill the server thread
                log.exception("REST %s %s failed", method, path)
                code, status, answer = "INTERNAL", 500, {"error": f"{type(exc).__name__}: {exc}"}
            if metrics is not None:  # recorded before the answer leaves, as TF Serving does
                model_name, api = request_labels(method, path)
                latency_us = int((time.monotonic() - started) * 1e6)
                metrics.record_request(model_name, code, api=api, entrypoint="REST", latency_us=latency_us)
            self._send(status, answer)

        def _body(self) -> bytes | None:
            """The request body, or None once the request was answered (and the connection closed)
            for a malformed or oversized length, or a body that stopped arriving."""
            declared = self.headers.get("Content-Length") or "0"
            try:
                length = int(declared)
                if length < 0:
                    raise ValueError
            except ValueError:
                return self._refuse(400, f"Malformed Content-Length: {declared[:40]!r}")
            if length > limits.max_body_bytes:
                return self._refuse(
                    413, f"Request body of {length} bytes exceeds the limit of {limits.max_body_bytes} bytes"
                )
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                return self._refuse(408, f"The request body did not arrive within {limits.read_timeout_s:g} s")
            if len(body) < length:  # the client went away mid-body: nobody to answer
                self.close_connection = True
                return None
            return body

        def _refuse(self, status: int, message: str) -> None:
            self.close_connection = True  # the rest of what the client sends is not read
            self._send(status, {"error": message})
            return None

        def _send(self, status: int, answer: dict) -> None:
            self._send_bytes(status, json.dumps(answer).encode("utf-8"), "application/json")

        def _send_bytes(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - overridden signature
            log.debug("REST %s", format % args)

    return RestHandler
