"""Serving fixtures: tiny real SavedModels with the production signature, and local servers.

A test module registers it as a plugin, so the session fixtures are shared:
``pytest_plugins = ["tests.support.serving_fixtures"]``.

The model has the trainer's contract: ``serving_default`` takes ``userId`` and ``movieId``
(int64, [None]) and returns ``score`` (float32, [None, 1]); lookups send unseen ids to the
OOV row; ``assets.extra/railyard_golden.json`` holds golden requests and offline predictions.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from infra.local_server import LocalServingServer
from infra.tfserving.client import ServingClient
from infra.tfserving.model_config import render_model_config, write_config_atomically
from railyard.contract import GOLDEN_FILE

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


def export_tiny_model(version_dir: Path, *, seed: int) -> Path:
    """IntegerLookup + Embedding model exported like the trainer does (keras.export.ExportArchive)."""
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
    score = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dot(axes=1)([users, movies]))
    model = keras.Model({"userId": user_id, "movieId": movie_id}, score)

    ids = [tf.TensorSpec((None,), tf.int64, name="userId"), tf.TensorSpec((None,), tf.int64, name="movieId")]

    @tf.function(input_signature=ids)
    def serve(userId, movieId):  # noqa: N803 - the signature's input names
        return {"score": model({"userId": userId, "movieId": movieId}, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve)
    archive.write_out(str(version_dir), verbose=False)
    predictions = offline_predictions(version_dir, GOLDEN_INSTANCES).tolist()
    (version_dir / GOLDEN_FILE).parent.mkdir(parents=True, exist_ok=True)
    (version_dir / GOLDEN_FILE).write_text(json.dumps({"instances": GOLDEN_INSTANCES, "predictions": predictions}))
    return version_dir


def offline_predictions(version_dir: Path, instances: list[dict]) -> np.ndarray:
    """The SavedModel's own answers, [N, 1], loaded straight from disk."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    result = signature(
        userId=tf.constant([row["userId"] for row in instances], tf.int64),
        movieId=tf.constant([row["movieId"] for row in instances], tf.int64),
    )
    return result["score"].numpy()


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


def client_for(server: LocalServingServer, **options) -> ServingClient:
    return ServingClient(server.grpc_target, server.rest_url, **options)


def golden(model_root: Path, version: int) -> dict:
    """The golden requests and offline predictions stored in a version at export time."""
    return json.loads((model_root / MODEL_NAME / str(version) / GOLDEN_FILE).read_text())


def assert_scores_of(version: int, scores, model_root: Path) -> None:
    """Served scores for GOLDEN_INSTANCES equal that version's offline predictions."""
    np.testing.assert_allclose(scores, golden(model_root, version)["predictions"], atol=1e-5)
