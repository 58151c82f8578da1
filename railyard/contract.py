"""What every served model version promises its callers: one signature, its inputs and output.

Export writes models to this contract, smoke tests check served versions against it, the
serving client sends requests by it, and the curl line and bench use its example. Nothing here
imports TensorFlow: the serving side reads the contract without loading a model.
"""

from __future__ import annotations

import json
from pathlib import Path

SIGNATURE_NAME = "serving_default"
# Input name -> dtype, in the order a request lists them.
INPUTS = {"userId": "int64", "movieId": "int64"}
OUTPUT = "score"  # float32, one score per instance ([N, 1])
OUTPUT_DTYPE = "float32"
# Golden requests and the offline SavedModel's answers, stored inside every exported version.
GOLDEN_FILE = "assets.extra/railyard_golden.json"
EXAMPLE_INSTANCES = ({"userId": 6, "movieId": 1},)

# TF Serving's metadata names dtypes as DataType enum names.
_TF_DTYPE_NAMES = {"int64": "DT_INT64", "float32": "DT_FLOAT"}


def signature_dtypes() -> tuple[dict[str, str], dict[str, str]]:
    """Inputs and outputs as TF Serving's metadata reports them (``DT_INT64``, ``DT_FLOAT``)."""
    inputs = {name: _TF_DTYPE_NAMES[dtype] for name, dtype in INPUTS.items()}
    return inputs, {OUTPUT: _TF_DTYPE_NAMES[OUTPUT_DTYPE]}


def describe() -> str:
    return (
        f"{SIGNATURE_NAME}: {', '.join(INPUTS)} ({'/'.join(sorted(set(INPUTS.values())))}) -> {OUTPUT} ({OUTPUT_DTYPE})"
    )


def example_request() -> dict:
    return {"instances": [dict(instance) for instance in EXAMPLE_INSTANCES]}


def curl_line(rest_url: str, model: str, label: str) -> str:
    """A command a user can paste to score the example request against a served label."""
    body = json.dumps(example_request())
    return f"curl -s -d '{body}' {rest_url}/v1/models/{model}/labels/{label}:predict"


def write_golden(saved_model_dir: Path, instances: list[dict[str, int]], scores) -> dict:
    """Store golden requests and the offline model's ``scores`` for them beside the model."""
    golden = {"instances": instances, "predictions": [[float(score)] for score in scores]}
    path = Path(saved_model_dir) / GOLDEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(golden, indent=1))
    return golden


def read_golden(version_dir: Path) -> dict:
    """``{"instances": [...], "predictions": [[score], ...]}`` as exported with the model."""
    path = Path(version_dir) / GOLDEN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the model was exported without golden requests")
    return json.loads(path.read_text())
