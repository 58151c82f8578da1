"""TF Serving's protocol as both sides speak it: names, states, labels and request encoding.

Shared by the transport client (``infra/tfserving/client.py``) and the local server
(``infra/local_server/``), which may import nothing else of the client. TensorFlow and the
serving protos are imported only by the functions that build protos.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from railyard.contract import CANARY, SIGNATURE_NAME, STABLE  # noqa: F401 - serving code takes the labels from here

if TYPE_CHECKING:
    import numpy as np
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

# ModelVersionStatus.State names (get_model_status.proto).
START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
# server_core.cc's UNAVAILABLE answer to a label before any config has set labels.
NO_LABELS_YET = "Model labels does not init yet."

LABEL_PATTERN = re.compile(r"[a-zA-Z0-9_]+")
MODEL_PLATFORM = "tensorflow"
# The served config, in the model root: the known-good config and the file servers start from.
CONFIG_FILE = "models.config"
# TF Serving's default ports (--port, --rest_api_port).
DEFAULT_GRPC_PORT, DEFAULT_REST_PORT = 8500, 8501
# gRPC metadata carrying the local server's reload token ("Bearer <token>"); TF Serving ignores it.
RELOAD_TOKEN_HEADER = "authorization"


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus: the version's state and its load/unload status."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


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
    instances: Sequence[Mapping[str, Any]] | Mapping[str, np.ndarray],
    *,
    version: int | None = None,
    label: str | None = None,
    signature_name: str = SIGNATURE_NAME,
) -> PredictRequest:
    """A PredictRequest for row-format ``instances``, or for inputs already batched as one array
    per input (columnar, as a caller holding NumPy arrays has them)."""
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
    for name, column in (instance_columns(instances) if isinstance(instances, Sequence) else instances).items():
        fill_tensor(request.inputs[name], column)
    return request


def fill_tensor(proto, array) -> None:
    """Write ``array`` into the TensorProto ``proto`` as ``tf.make_tensor_proto`` would: a numeric
    array of more than one value as its dtype, shape and raw bytes (``tensor_content``), set
    directly (make_tensor_proto's checks cost more than the copy, per micro-batch); anything
    else through make_tensor_proto."""
    import numpy as np

    dtype = _RAW_DTYPES.get(np.dtype(array.dtype).str) if isinstance(array, np.ndarray) else None
    if dtype is None or array.size <= 1:
        import tensorflow as tf

        proto.CopyFrom(tf.make_tensor_proto(array))
        return
    proto.dtype = dtype
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    proto.tensor_content = np.ascontiguousarray(array).tobytes()


# Little-endian NumPy dtypes (``dtype.str``) sent as raw bytes, and their TF DataType numbers
# (types.proto: DT_FLOAT 1, DT_DOUBLE 2, DT_INT32 3, DT_INT64 9), the byte order TF expects.
_RAW_DTYPES = {"<f4": 1, "<f8": 2, "<i4": 3, "<i8": 9}
