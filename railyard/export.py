"""A trained network of any kind as a served version: the SavedModel, its contract, golden requests.

The export has the two signatures of ``railyard.contract``, each returning the kind's one output
(``{output: float32 [N, 1]}``):
- ``features``: ids + the declared vectors, the fresh path the online store feeds;
- ``serving_default``: ids only, the vectors looked up in the snapshot of the aggregates at the
  training cut-off (zeros for unknown ids), so TF Serving alone (no feature store) still answers.
The version's contract (kind, inputs, output) goes to ``assets.extra/`` beside the golden requests.
Scoring a SavedModel here reads a signature's only output, whatever its name.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import polars as pl

from railyard import contract
from railyard import features as F
from railyard.model_input import feature_inputs


def _snapshot_lookup():
    """The snapshot layer, defined lazily so importing this module does not import Keras/TF."""
    import keras
    from keras import ops

    class SnapshotLookup(keras.layers.Layer):
        """Maps raw ids to the aggregates frozen at the training cut-off (row 0: unknown, all zero)."""

        def __init__(self, ids: np.ndarray, table: np.ndarray, **kwargs):
            super().__init__(**kwargs)
            self.index = keras.layers.IntegerLookup(
                vocabulary=ids.astype(np.int64), num_oov_indices=1, mask_token=None, output_mode="int"
            )
            self.table = self.add_weight(
                shape=table.shape,
                initializer=keras.initializers.Constant(table),
                trainable=False,
                name="table",
            )

        def call(self, ids):
            return ops.take(self.table, self.index(ids), axis=0)

    return SnapshotLookup


def _snapshot_table(snapshot: pl.DataFrame, id_column: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Ids and their aggregate rows; row 0 (all zero) stands for unknown ids."""
    table = F.feature_matrix(snapshot, names)
    ids = snapshot.get_column(id_column).to_numpy().astype(np.int64)
    return ids, np.concatenate([np.zeros((1, table.shape[1]), np.float32), table], axis=0)


def export_serving_model(model, feature_set: F.FeatureSet, out_dir: Path, *, kind: str, output: str) -> Path:
    """Write a SavedModel with the two signatures of ``railyard.contract``, both -> ``output`` [N, 1],
    and the version's contract naming ``kind`` and ``output``."""
    import keras
    import tensorflow as tf

    SnapshotLookup = _snapshot_lookup()
    users = SnapshotLookup(*_snapshot_table(feature_set.user_snapshot, "userId", F.USER_FEATURES), name="user_snapshot")
    movies = SnapshotLookup(
        *_snapshot_table(feature_set.movie_snapshot, "movieId", F.MOVIE_FEATURES), name="movie_snapshot"
    )
    for lookup in (users, movies):  # ExportArchive tracks built layers only
        lookup(tf.constant([0], tf.int64))
    ids = [tf.TensorSpec((None,), tf.int64, name="userId"), tf.TensorSpec((None,), tf.int64, name="movieId")]

    @tf.function(input_signature=ids)
    def serve_ids(userId, movieId):  # noqa: N803 - the names are the signature's input keys
        return serve_features(userId, movieId, users(userId), movies(movieId))

    @tf.function(
        input_signature=[
            *ids,
            tf.TensorSpec((None, F.USER_WIDTH), tf.float32, name="user_features"),
            tf.TensorSpec((None, F.MOVIE_WIDTH), tf.float32, name="movie_features"),
        ]
    )
    def serve_features(userId, movieId, user_features, movie_features):  # noqa: N803 - signature input keys
        inputs = {
            "userId": userId,
            "movieId": movieId,
            "user_features": user_features,
            "movie_features": movie_features,
        }
        return {output: tf.cast(model(inputs, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(users)
    archive.track(movies)
    archive.add_endpoint(name=contract.SIGNATURE_NAME, fn=serve_ids)
    archive.add_endpoint(name=contract.FEATURES_SIGNATURE, fn=serve_features)
    out_dir = Path(out_dir)
    archive.write_out(str(out_dir), verbose=False)
    contract.write_contract(out_dir, kind=kind, output=output)
    return out_dir


@functools.lru_cache(maxsize=4)
def _loaded_signatures(path: str, _modified_ns: int):
    """A SavedModel's signatures, loaded once for all of them: evaluation and the golden requests
    each use both, and a load costs as much as scoring a holdout. Keyed by the file's mtime too,
    so a folder written again is loaded again."""
    import tensorflow as tf

    return tf.saved_model.load(path).signatures


class MissingSignature(LookupError):
    """The SavedModel lacks a signature (a version exported before it existed)."""


def load_signature(saved_model_dir: Path, name: str = contract.SIGNATURE_NAME):
    path = Path(saved_model_dir).resolve()
    signatures = _loaded_signatures(str(path), (path / "saved_model.pb").stat().st_mtime_ns)
    if name not in signatures:
        raise MissingSignature(f"{saved_model_dir} has no signature {name!r} (it has {sorted(signatures)})")
    return signatures[name]


def predict_saved_model(saved_model_dir: Path, user_ids, movie_ids, batch_size: int = 65536) -> np.ndarray:
    """Scores of the ids-only signature (features frozen at the cut-off), as a server computes them."""
    inputs = {"userId": np.asarray(user_ids, dtype=np.int64), "movieId": np.asarray(movie_ids, dtype=np.int64)}
    return _predict(load_signature(saved_model_dir), inputs, batch_size)


def predict_with_features(saved_model_dir: Path, inputs: dict[str, np.ndarray], batch_size: int = 65536) -> np.ndarray:
    """Scores of the ``features`` signature for ids plus aggregates (``feature_inputs``)."""
    return _predict(load_signature(saved_model_dir, contract.FEATURES_SIGNATURE), inputs, batch_size)


def _predict(signature, inputs: dict[str, np.ndarray], batch_size: int) -> np.ndarray:
    import tensorflow as tf

    rows = len(inputs["userId"])
    scores = [
        contract.scores_of(
            signature(**{name: tf.constant(values[start : start + batch_size]) for name, values in inputs.items()})
        )
        for start in range(0, rows, batch_size)
    ]
    return np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, dtype=np.float32)


def golden_instances(feature_set: F.FeatureSet, count: int = 12, seed: int = 0) -> list[dict[str, int]]:
    """Fixed request set for post-deploy checks: holdout pairs plus unseen user and movie ids."""
    holdout = feature_set.holdout.select("userId", "movieId").unique(maintain_order=True)
    picked = holdout.sample(n=min(count, len(holdout)), seed=seed, shuffle=True) if len(holdout) else holdout
    unseen_user = int(feature_set.user_snapshot.get_column("userId").max()) + 1_000_000
    unseen_movie = int(feature_set.movie_snapshot.get_column("movieId").max()) + 1_000_000
    known_user = int(feature_set.user_snapshot.get_column("userId")[0])
    known_movie = int(feature_set.movie_snapshot.get_column("movieId")[0])
    rows = [{"userId": int(u), "movieId": int(m)} for u, m in picked.iter_rows()]
    rows += [
        {"userId": unseen_user, "movieId": known_movie},
        {"userId": known_user, "movieId": unseen_movie},
        {"userId": unseen_user, "movieId": unseen_movie},
    ]
    return rows


def write_golden_requests(saved_model_dir: Path, feature_set: F.FeatureSet, instances: list[dict[str, int]]) -> dict:
    """Store the golden requests of both signatures and the offline SavedModel's answers beside
    the model. The ``features`` requests carry each pair's aggregates as of the holdout row (zero
    for unknown ids): what the online store would send."""
    pairs = pl.DataFrame(instances, schema={"userId": pl.Int64, "movieId": pl.Int64})
    # The pairs' holdout rows first: the first row of every pair, over every row with its
    # feature arrays, took 6 s of a 5M-row holdout.
    asked = feature_set.holdout.join(pairs, on=["userId", "movieId"], how="semi", maintain_order="left")
    rows = pairs.join(
        asked.unique(["userId", "movieId"], keep="first", maintain_order=True),
        on=["userId", "movieId"],
        how="left",
        maintain_order="left",
    )
    zero_genres = pl.lit([0.0] * len(F.GENRES), pl.Array(pl.Float32, len(F.GENRES)))
    rows = rows.with_columns(
        pl.col(name).fill_null(zero_genres if isinstance(rows.schema[name], pl.Array) else 0.0)
        for name in (*F.USER_FEATURES, *F.MOVIE_FEATURES)
    )
    inputs = feature_inputs(rows)
    with_features = [
        {"userId": int(user), "movieId": int(movie), "user_features": u.tolist(), "movie_features": m.tolist()}
        for user, movie, u, m in zip(
            inputs["userId"], inputs["movieId"], inputs["user_features"], inputs["movie_features"]
        )
    ]
    users, movies = [row["userId"] for row in instances], [row["movieId"] for row in instances]
    return contract.write_golden(
        saved_model_dir,
        {
            contract.SIGNATURE_NAME: (instances, predict_saved_model(saved_model_dir, users, movies)),
            contract.FEATURES_SIGNATURE: (with_features, predict_with_features(saved_model_dir, inputs)),
        },
    )
