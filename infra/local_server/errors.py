"""Errors carrying TF Serving's status codes (the gRPC code names), and their HTTP mapping."""

from __future__ import annotations

import re

# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class StatusError(Exception):
    def __init__(self, code: str, message: str) -> None:
        if code not in HTTP_STATUS or code == "OK":
            raise ValueError(f"not an error status code: {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:  # like tensorflow::Status::ToString()
        return f"{self.code}: {self.message}"


def status_from_exception(exc: BaseException) -> StatusError:
    """TF raises OpErrors with a code; its pybind layer turns other statuses into builtins."""
    import tensorflow as tf
    from tensorflow.core.protobuf import error_codes_pb2

    if isinstance(exc, StatusError):
        return exc
    if isinstance(exc, tf.errors.OpError):
        return StatusError(error_codes_pb2.Code.Name(exc.error_code), runtime_message(exc.message))
    # tensorflow/python/lib/core/pybind11_status.h: OUT_OF_RANGE -> IndexError, INVALID_ARGUMENT
    # -> ValueError, UNIMPLEMENTED -> NotImplementedError (a truncated variables file gives
    # IndexError "Read less bytes than requested").
    for kind, code in (
        (IndexError, "OUT_OF_RANGE"),
        ((ValueError, TypeError), "INVALID_ARGUMENT"),
        (NotImplementedError, "UNIMPLEMENTED"),
        (FileNotFoundError, "NOT_FOUND"),
    ):
        if isinstance(exc, kind):
            return StatusError(code, str(exc))
    return StatusError("UNKNOWN", f"{type(exc).__name__}: {exc}")


# What TensorFlow's Python runtime adds to a graph's status message (atomic_function.py
# InterpolateRuntimeError, error_interpolation.py): a header, per failing node its Python stack,
# the node tags and the op that ran the function. TF Serving's answers carry none of it.
_GRAPH_ERROR_HEADER = "Graph execution error:"
_NODE_TAGS = re.compile(r"\s*\[\[(\{\{[^}]*\}\})+\]\]")
_OP_SUFFIX = re.compile(r"\s*\[Op:[^\]]*\]")


def runtime_message(message: str) -> str:
    """The status message of a graph's run-time error, without graph internals: node names,
    stack traces of the server's code, function names (the graph's structure is the model's)."""
    lines = message.splitlines()
    if lines and lines[0] == _GRAPH_ERROR_HEADER:
        # After the header: per node "Detected at node …", its stack (indented, or "<stack traces
        # unavailable>"), blank lines; the message itself starts at the first other line.
        body = [
            line
            for line in lines[1:]
            if line.strip() and not line.startswith((" ", "Detected at node ", "<stack traces unavailable>"))
        ]
        message = "\n".join(body) or message
    message = _OP_SUFFIX.sub("", _NODE_TAGS.sub("", message))
    return " ".join(message.split())
