"""TF Serving warmup requests: ``assets.extra/tf_serving_warmup_requests`` in a SavedModel.

TF Serving replays these records while it loads a version, before the version turns
AVAILABLE, so the first real request does not pay for graph warm-up. The format is a TFRecord
file of ``PredictionLog`` protos (tensorflow_serving/servables/tensorflow/saved_model_warmup*.cc).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.tfserving.protocol import build_predict_request
from railyard.contract import SIGNATURE_NAME

if TYPE_CHECKING:
    from tensorflow_serving.apis.predict_pb2 import PredictRequest

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # WarmupConsts::kMaxNumRecords: more fails the load


def write_warmup_requests(
    saved_model_dir: Path,
    model_name: str,
    instances: Sequence[Mapping[str, Any]],
    *,
    signature_name: str = SIGNATURE_NAME,
) -> Path:
    """Write the instances as one batched Predict request (one record) and return the file."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    request = build_predict_request(model_name, instances, signature_name=signature_name)
    record = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
    path = Path(saved_model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(record.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir: Path) -> list[PredictRequest]:
    """The Predict requests of a SavedModel's warmup file ([] when it has none)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = Path(saved_model_dir) / WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for index, raw in enumerate(tf.data.TFRecordDataset(str(path)).as_numpy_iterator()):
        if index >= MAX_WARMUP_RECORDS:
            raise ValueError(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}")
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        if log.WhichOneof("log_type") != "predict_log":
            kind = log.WhichOneof("log_type")
            raise ValueError(f"warmup record {index} in {path} is a {kind}; only predict_log is supported")
        requests.append(log.predict_log.request)
    return requests
