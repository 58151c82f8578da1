"""Errors carrying TF Serving's status codes (the gRPC code names), and their HTTP mapping."""

from __future__ import annotations

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
        return StatusError(error_codes_pb2.Code.Name(exc.error_code), exc.message)
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
