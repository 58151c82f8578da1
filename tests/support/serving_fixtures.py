"""Serving fixtures: tiny real SavedModels with the production signature, and local servers.

A test module registers it as a plugin, so the session fixtures are shared:
``pytest_plugins = ["tests.support.serving_fixtures"]``.

The model has the trainer's contract: ``serving_default`` takes ``userId`` and ``movieId``
(int64, [None]), ``features`` also the aggregates (float32, [None, USER_WIDTH] and
[None, MOVIE_WIDTH]); both return ``score`` (float32, [None, 1]; another name when a test asks,
written to the version's contract as a kind names it); lookups send unseen ids to the OOV row;
``assets.extra/railyard_golden.json`` holds golden requests and offline predictions of both
signatures.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from infra.local_server import LocalServingServer
from infra.tfserving.client import ServingClient, ServingError
from infra.tfserving.model_config import render_model_config, write_config_atomically
from railyard.contract import CANARY, FEATURES_SIGNATURE, GOLDEN_FILE, SIGNATURE_NAME, scores_of, write_contract
from railyard.features import MOVIE_WIDTH, USER_WIDTH

MODEL_NAME = "recmodel"
GOOD_VERSIONS = (1, 2, 3)  # same architecture, different weights
CORRUPT_VERSION = 4  # a copy of version 1 with a truncated variables file
# Known ids, plus an unseen user and an unseen movie (they hit the OOV embedding rows).
GOLDEN_INSTANCES = [
    {"userId": 6, "movieId": 1},
    {"userId": 1, "movieId": 30},
    {"userId": 20, "movieId": 7},
    {"userId": 10_000, "movieId": 3},
    {"userId": 4, "movieId": 99_999},
]
# The aggregates sent with each golden instance to the features signature (any values will do).
FEATURE_VALUES = {
    "user_features": [float(i % 3) for i in range(USER_WIDTH)],
    "movie_features": [float(i % 2) for i in range(MOVIE_WIDTH)],
}
DTYPES = {"userId": "int64", "movieId": "int64", "user_features": "float32", "movie_features": "float32"}


def export_tiny_model(version_dir: Path, *, seed: int, output: str | None = None) -> Path:
    """IntegerLookup + Embedding model exported like the trainer does (keras.export.ExportArchive);
    with ``output``, the signatures' output has that name and the version's contract says so."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    user_id = keras.Input(shape=(), dtype="int64", name="userId")
    movie_id = keras.Input(shape=(), dtype="int64", name="movieId")
    spread = keras.initializers.RandomNormal(stddev=1.0, seed=seed)  # versions must give clearly different scores
    users = keras.layers.Embedding(21, 4, embeddings_initializer=spread)(
        keras.layers.IntegerLookup(vocabulary=np.arange(1, 21))(user_id)
    )
    movies = keras.layers.Embedding(31, 4, embeddings_initializer=spread)(
        keras.layers.IntegerLookup(vocabulary=np.arange(1, 31))(movie_id)
    )
    user_features = keras.Input(shape=(USER_WIDTH,), dtype="float32", name="user_features")
    movie_features = keras.Input(shape=(MOVIE_WIDTH,), dtype="float32", name="movie_features")
    # Log-scaled, as a model must scale its inputs: a time's day number (about 20,000) would saturate the score.
    scaled = [keras.layers.Activation(keras.ops.log1p)(part) for part in (user_features, movie_features)]
    joined = keras.layers.Concatenate()([keras.layers.Dot(axes=1)([users, movies]), *scaled])
    score = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=spread)(joined)
    inputs = {"userId": user_id, "movieId": movie_id, "user_features": user_features, "movie_features": movie_features}
    model = keras.Model(inputs, score)

    ids = [tf.TensorSpec((None,), tf.int64, name="userId"), tf.TensorSpec((None,), tf.int64, name="movieId")]

    @tf.function(
        input_signature=[
            *ids,
            tf.TensorSpec((None, USER_WIDTH), tf.float32, name="user_features"),
            tf.TensorSpec((None, MOVIE_WIDTH), tf.float32, name="movie_features"),
        ]
    )
    def serve_features(userId, movieId, user_features, movie_features):  # noqa: N803 - the signature's input names
        inputs = {
            "userId": userId,
            "movieId": movieId,
            "user_features": user_features,
            "movie_features": movie_features,
        }
        return {output or "score": model(inputs, training=False)}

    @tf.function(input_signature=ids)
    def serve(userId, movieId):  # noqa: N803 - the signature's input names
        rows = tf.shape(userId)[0]
        zeros = tf.zeros((rows, USER_WIDTH)), tf.zeros((rows, MOVIE_WIDTH))
        return serve_features(userId, movieId, *zeros)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name=SIGNATURE_NAME, fn=serve)
    archive.add_endpoint(name=FEATURES_SIGNATURE, fn=serve_features)
    archive.write_out(str(version_dir), verbose=False)
    if output is not None:
        write_contract(version_dir, kind="tiny", output=output)
    with_features = [row | FEATURE_VALUES for row in GOLDEN_INSTANCES]
    (version_dir / GOLDEN_FILE).parent.mkdir(parents=True, exist_ok=True)
    golden_requests = {
        SIGNATURE_NAME: (GOLDEN_INSTANCES, offline_predictions(version_dir, GOLDEN_INSTANCES).tolist()),
        FEATURES_SIGNATURE: (
            with_features,
            offline_predictions(version_dir, with_features, FEATURES_SIGNATURE).tolist(),
        ),
    }
    (version_dir / GOLDEN_FILE).write_text(
        json.dumps(
            {name: {"instances": rows, "predictions": scores} for name, (rows, scores) in golden_requests.items()}
        )
    )
    return version_dir


def offline_predictions(version_dir: Path, instances: list[dict], signature: str = SIGNATURE_NAME) -> np.ndarray:
    """The SavedModel's own answers (its only output), [N, 1], loaded straight from disk."""
    import tensorflow as tf

    function = tf.saved_model.load(str(version_dir)).signatures[signature]
    columns = {name: [row[name] for row in instances] for name in instances[0]}
    result = function(**{name: tf.constant(values, DTYPES[name]) for name, values in columns.items()})
    return scores_of({name: tensor.numpy() for name, tensor in result.items()}).reshape(-1, 1)


def corrupt_copy(source: Path, target: Path) -> Path:
    """A version whose variables file is cut short: its load fails."""
    shutil.copytree(source, target)
    (data_file,) = (target / "variables").glob("variables.data-*")
    with open(data_file, "r+b") as handle:
        handle.truncate(16)
    return target


def model_config(model_root: Path, versions, labels):
    return render_model_config(MODEL_NAME, model_root / MODEL_NAME, versions, labels)


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<root>/recmodel/{1,2,3} good versions, /4 corrupted. Read-only: copy before changing."""
    root = tmp_path_factory.mktemp("serving_models")
    for version in GOOD_VERSIONS:
        export_tiny_model(root / MODEL_NAME / str(version), seed=version)
    corrupt_copy(root / MODEL_NAME / "1", root / MODEL_NAME / str(CORRUPT_VERSION))
    return root


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., LocalServingServer]]:
    """Factory: ``start_server(config)`` writes the config file and starts a server on free ports."""
    servers: list[LocalServingServer] = []

    def start(config=None, *, config_path: Path | None = None, **options) -> LocalServingServer:
        path = config_path or tmp_path / f"models-{len(servers)}.config"
        if config is not None:
            write_config_atomically(path, config)
        options.setdefault("max_num_load_retries", 0)
        server = LocalServingServer(path, **options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def contract_server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServingServer]:
    """Versions 1 (stable) and 2 (canary). Tests must not change its config."""
    path = tmp_path_factory.mktemp("contract") / "models.config"
    write_config_atomically(path, model_config(model_root, {1, 2}, {"stable": 1, "canary": 2}))
    with LocalServingServer(path, max_num_load_retries=0).start() as server:
        yield server


class CanaryFails:
    """A serving client (``inner``), except that every Predict on the `canary` label fails."""

    def __init__(self, inner):
        self.inner, self.grpc_target = inner, inner.grpc_target

    def label_version(self, model, label):
        return self.inner.label_version(model, label)

    def predict_grpc_versioned(self, model, columns, version=None, label=None, signature_name="serving_default"):
        if label == CANARY:
            raise ServingError("Predict failed: INTERNAL: the canary broke", code="INTERNAL", details="broke")
        return self.inner.predict_grpc_versioned(model, columns, version, label, signature_name)


def client_for(server: LocalServingServer, **options) -> ServingClient:
    return ServingClient(server.grpc_target, server.rest_url, **options)


def golden(model_root: Path, version: int) -> dict:
    """The ids-only golden requests and offline predictions stored in a version at export time."""
    return json.loads((model_root / MODEL_NAME / str(version) / GOLDEN_FILE).read_text())[SIGNATURE_NAME]


def assert_scores_of(version: int, scores, model_root: Path) -> None:
    """Served scores for GOLDEN_INSTANCES equal that version's offline predictions."""
    np.testing.assert_allclose(scores, golden(model_root, version)["predictions"], atol=1e-5)
