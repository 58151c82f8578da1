"""What every served model version promises its callers: two signatures, their inputs and output.

- ``serving_default`` takes ids only; the model looks the features up in the snapshot frozen at
  its training cut-off (a request straight to TF Serving, as SparrowRecSys sends it, works).
- ``features`` takes the ids plus the raw aggregates read from the online feature store (the
  layouts of ``railyard.features``: USER_WIDTH and MOVIE_WIDTH floats): fresh features.

The inputs are Railyard's, the same for every model kind; the output (one float32 per instance,
[N, 1]) is named by the kind (``railyard.kinds``). Each version holds its contract (kind, inputs,
output) in ``CONTRACT_FILE``: the smoke tests read the output's name there, and whoever only has
a predict answer takes its only output (``scores_of``), never a name fixed here.

A request names ids as the data set has them (``request_id``: the rating events' rule, 1 to
2^63-1), whoever asks: the ranking service and ``railyard score`` refuse the same ids.

Export writes models to this contract, smoke tests check served versions against it, the
serving client sends requests by it, and the curl line and bench use its example. Nothing here
imports TensorFlow: the serving side reads the contract without loading a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from railyard.errors import Refused
from railyard.events import MalformedEvent, parse_id  # the data set's id rule, shared by whatever asks for a score

SIGNATURE_NAME = "serving_default"
FEATURES_SIGNATURE = "features"
# Version labels Railyard moves: `stable` serves everyone, `canary` the version under review (and,
# through a ranking service, the canary share of users).
STABLE = "stable"
CANARY = "canary"
# Input name -> dtype, in the order a request lists them.
INPUTS = {"userId": "int64", "movieId": "int64"}
FEATURE_INPUTS = INPUTS | {"user_features": "float32", "movie_features": "float32"}
SIGNATURES = {SIGNATURE_NAME: INPUTS, FEATURES_SIGNATURE: FEATURE_INPUTS}
DEFAULT_OUTPUT = "score"  # the output of a version exported before kinds named theirs
OUTPUT_DTYPE = "float32"  # one score per instance ([N, 1])
# Golden requests and the offline SavedModel's answers, and the version's contract, stored
# inside every exported version.
GOLDEN_FILE = "assets.extra/railyard_golden.json"
CONTRACT_FILE = "assets.extra/railyard_contract.json"
EXAMPLE_INSTANCES = ({"userId": 6, "movieId": 1},)

# TF Serving's metadata names dtypes as DataType enum names.
_TF_DTYPE_NAMES = {"int64": "DT_INT64", "float32": "DT_FLOAT"}


class InvalidId(Refused):
    """A userId or movieId no data set holds (ids are those of rating events, ``railyard.events``)."""

    next_step = "ask about ids from 1 to 2^63-1, as the data set has them; nothing was scored"


def request_id(name: str, value: int | str) -> int:
    """``value`` as the ``name`` (userId, movieId) of a request for scores, by the rating events'
    id rule; ``InvalidId`` when it breaks it."""
    try:
        return parse_id(name, str(value))
    except MalformedEvent as bad:
        raise InvalidId(bad.detail) from None


def feature_columns(user_ids, movie_ids, user_features=None, movie_features=None) -> dict[str, np.ndarray]:
    """A request's inputs as arrays of the signatures' dtypes: ids only (``serving_default``), or
    with the online store's feature rows (``features``)."""
    columns = {"userId": np.asarray(user_ids, np.int64), "movieId": np.asarray(movie_ids, np.int64)}
    if user_features is not None:
        columns["user_features"] = np.asarray(user_features, np.float32)
        columns["movie_features"] = np.asarray(movie_features, np.float32)
    return columns


class NotOneOutput(ValueError):
    """A predict answer without exactly one output: not a Railyard signature."""


def scores_of(outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """A predict answer's only output (whatever the kind named it) as one float64 score per instance."""
    if len(outputs) != 1:
        raise NotOneOutput(f"a Railyard signature returns one output, this answer has {sorted(outputs) or 'none'}")
    (scores,) = outputs.values()
    return np.asarray(scores, np.float64).reshape(-1)


def signature_dtypes(signature: str, output: str) -> tuple[dict[str, str], dict[str, str]]:
    """Inputs and outputs as TF Serving's metadata reports them (``DT_INT64``, ``DT_FLOAT``)."""
    inputs = {name: _TF_DTYPE_NAMES[dtype] for name, dtype in SIGNATURES[signature].items()}
    return inputs, {output: _TF_DTYPE_NAMES[OUTPUT_DTYPE]}


def describe(signature: str, output: str) -> str:
    inputs = SIGNATURES[signature]
    return f"{signature}: {', '.join(inputs)} ({'/'.join(sorted(set(inputs.values())))}) -> {output} ({OUTPUT_DTYPE})"


def example_request() -> dict:
    return {"instances": [dict(instance) for instance in EXAMPLE_INSTANCES]}


def curl_line(rest_url: str, model: str, label: str) -> str:
    """A command a user can paste to score the example request against a served label."""
    body = json.dumps(example_request())
    return f"curl -s -d '{body}' {rest_url}/v1/models/{model}/labels/{label}:predict"


def write_golden(saved_model_dir: Path, requests: dict[str, tuple[list[dict], list[float]]]) -> dict:
    """Store golden requests per signature, with the offline model's scores, beside the model."""
    golden = {
        signature: {"instances": instances, "predictions": [[float(score)] for score in scores]}
        for signature, (instances, scores) in requests.items()
    }
    path = Path(saved_model_dir) / GOLDEN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(golden, indent=1))
    return golden


def write_contract(saved_model_dir: Path, *, kind: str, output: str) -> dict:
    """Store what the version promises (its kind, each signature's inputs and output) beside the model."""
    served = {
        "kind": kind,
        "output": output,
        "output_dtype": OUTPUT_DTYPE,
        "signatures": {name: {"inputs": dict(inputs), "output": output} for name, inputs in SIGNATURES.items()},
    }
    path = Path(saved_model_dir) / CONTRACT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(served, indent=1))
    return served


def read_contract(version_dir: Path) -> dict:
    """The version's contract; a version exported before versions held one served ``score``."""
    path = Path(version_dir) / CONTRACT_FILE
    if not path.is_file():
        return {
            "kind": None,
            "output": DEFAULT_OUTPUT,
            "output_dtype": OUTPUT_DTYPE,
            "signatures": {
                name: {"inputs": dict(inputs), "output": DEFAULT_OUTPUT} for name, inputs in SIGNATURES.items()
            },
        }
    return json.loads(path.read_text())


def read_golden(version_dir: Path) -> dict:
    """``{signature: {"instances": [...], "predictions": [[score], ...]}}`` as exported with the model."""
    path = Path(version_dir) / GOLDEN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the model was exported without golden requests")
    return json.loads(path.read_text())
