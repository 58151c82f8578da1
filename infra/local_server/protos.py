"""Responses shared by the gRPC and REST front ends, built on tensorflow-serving-api protos."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google.protobuf import json_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import error_codes_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from infra.local_server.servable import Servable
from infra.tfserving.protocol import VersionStatus

SIGNATURE_DEF_FIELD = "signature_def"  # the only metadata field TF Serving supports

# Tensor::AsProtoField: TF Serving answers with typed value fields, not tensor_content, and
# clients read e.g. ``outputs["score"].float_val``.
_VALUE_FIELDS = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def status_response(statuses: Sequence[VersionStatus]) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        item = response.model_version_status.add(
            version=status.version, state=get_model_status_pb2.ModelVersionStatus.State.Value(status.state)
        )
        item.status.error_code = error_codes_pb2.Code.Value(status.error_code)
        item.status.error_message = status.error_message
        item.status.SetInParent()  # TF Serving always sets it, so JSON shows {"error_code": "OK", ...}
    return response


def status_json(statuses: Sequence[VersionStatus]) -> dict:
    """http_rest_api_util.cc ToJsonString(GetModelStatusResponse): proto JSON, defaults printed."""
    return json_format.MessageToDict(status_response(statuses), always_print_fields_with_no_presence=True)


def metadata_response(name: str, version: int, servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, signature in servable.signature_defs.items():
        signatures.signature_def[key].CopyFrom(signature)
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signatures)
    return response


def metadata_json(name: str, version: int, servable: Servable) -> dict:
    """http_rest_api_util.cc ToJsonString(GetModelMetadataResponse): the ``Any`` is unpacked,
    so ``signature_def`` is nested twice, and proto field names are kept."""
    response = metadata_response(name, version, servable)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signatures)
    options = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}
    return {
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {SIGNATURE_DEF_FIELD: json_format.MessageToDict(signatures, **options)},
    }


def model_spec(name: str, version: int, signature_name: str) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = version
    return spec


def tensor_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    import tensorflow as tf

    dtype = tf.string if array.dtype == object else tf.dtypes.as_dtype(array.dtype)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    field = _VALUE_FIELDS.get(dtype.as_datatype_enum)
    if field is None:
        proto.CopyFrom(tf.make_tensor_proto(array))
    else:
        getattr(proto, field).extend(array.ravel().tolist())
    return proto
