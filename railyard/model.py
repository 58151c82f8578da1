"""NeuralCF-style recommender: raw ids + raw per-entity aggregates -> P(rating >= 3.5).

The *core* model takes ids plus the raw additive aggregates that ``railyard.features`` builds per
row (and the online store keeps): every transformation (smoothing toward the training priors,
which are frozen into the model as constants; rates; genre affinity) is a layer of the model,
so one version reads any state of the store. The export has two signatures
(``railyard.contract``):
- ``features``: ids + aggregates, the fresh path the online store feeds;
- ``serving_default``: ids only, looked up in the snapshot of the aggregates at the training
  cut-off, so TF Serving alone (no feature store) still answers.
Unknown ids map to the out-of-vocabulary row: zero aggregates (the priors, after smoothing) and a
learned OOV embedding (trained by randomly dropping ids to OOV, so it is not left at its init).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from railyard import __version__, contract, parquet_io
from railyard import features as F
from railyard.configs import TrainConfig
from railyard.locations import Location, parquet_file, read_parquet

ID_DROPOUT_RATE = 0.05
EMBEDDING_L2 = 1e-6
STEPS_PER_EXECUTION = 16
_LOG_COUNT_SCALE = 5.0  # log1p(counts) reach ~5-10 on MovieLens; keep inputs near unit scale


@dataclass
class TrainResult:
    model: object  # keras.Model (typed loosely: keras is imported lazily)
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    train_rows: int = 0


def code_version(config: TrainConfig) -> str:
    """What produced a model besides the data: package, feature code and training config."""
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:10]
    return f"railyard-{__version__}+features-{F.FEATURE_CODE_VERSION}+config-{digest}"


def user_feature_matrix(frame: pl.DataFrame) -> np.ndarray:
    return F.feature_matrix(frame, F.USER_FEATURES)


def movie_feature_matrix(frame: pl.DataFrame) -> np.ndarray:
    return F.feature_matrix(frame, F.MOVIE_FEATURES)


def feature_inputs(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """The core model's (and the ``features`` signature's) inputs for rows holding ids and the
    USER_FEATURES and MOVIE_FEATURES columns."""
    return {
        "userId": frame.get_column("userId").to_numpy().astype(np.int64, copy=False),
        "movieId": frame.get_column("movieId").to_numpy().astype(np.int64, copy=False),
        "user_features": user_feature_matrix(frame),
        "movie_features": movie_feature_matrix(frame),
    }


def _arrow_to_inputs(table) -> tuple[dict[str, np.ndarray], np.ndarray]:
    frame = pl.from_arrow(table)
    labels = frame.get_column("label").to_numpy().astype(np.float32, copy=False).reshape(-1, 1)
    return feature_inputs(frame), labels


def _row_groups(split_dir: Location, rng: np.random.Generator | None) -> Iterator:
    """Stream a split's feature shards a row group at a time.

    With ``rng``: row groups (of all shards) in random order and rows permuted within each
    group, so the time-sorted split is not fed in time order, without loading it all at once.
    """
    files = [(shard, parquet_file(shard)) for shard in F.shards(split_dir)]
    groups = [((shard, file), group) for shard, file in files for group in range(file.num_row_groups)]
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    for (shard, file), group in groups:
        with parquet_io.reading(shard):
            table = file.read_row_group(group)
        inputs, labels = _arrow_to_inputs(table)
        if rng is not None:
            order = rng.permutation(len(labels))
            inputs, labels = {key: value[order] for key, value in inputs.items()}, labels[order]
        yield inputs, labels


def make_dataset(
    path: Location | Path | str,
    batch_size: int,
    *,
    shuffle_seed: int | None,
    damaged: list[parquet_io.DamagedParquet] | None = None,
):
    """tf.data pipeline over a split's feature shards (``path``: the split's folder, local or on
    S3), re-shuffled every epoch when seeded.

    Python hands over whole row groups; tf.data cuts them into batches in C++ (``rebatch``), so
    no Python runs per training step beside Keras' own loop. tf.data reports an error of the
    generator as its own ``InvalidArgumentError``: a damaged shard is also appended to ``damaged``.
    """
    import tensorflow as tf

    path = Location.of(path)
    epoch_counter = iter(range(1_000_000))

    def generator():
        _reuse_freed_memory()  # here, not earlier: TensorFlow tunes malloc when the iterator starts
        rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed + next(epoch_counter))
        try:
            yield from _row_groups(path, rng)
        except parquet_io.DamagedParquet as error:
            if damaged is not None:
                damaged.append(error)
            raise

    signature = (
        {
            "userId": tf.TensorSpec((None,), tf.int64),
            "movieId": tf.TensorSpec((None,), tf.int64),
            "user_features": tf.TensorSpec((None, F.USER_WIDTH), tf.float32),
            "movie_features": tf.TensorSpec((None, F.MOVIE_WIDTH), tf.float32),
        },
        tf.TensorSpec((None, 1), tf.float32),
    )
    dataset = tf.data.Dataset.from_generator(generator, output_signature=signature).rebatch(batch_size)
    # A known epoch length lets Keras end epochs without hitting (and warning about) the end of data.
    rows = split_rows(path)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-rows // batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


# glibc's ceiling for its dynamic mmap threshold (mallopt(3)). Blocks under it come from the heap
# and are reused. 8 MiB was too low: some of a 25M fit's step tensors are larger, and it faulted
# ~290k pages/s.
_MMAP_THRESHOLD = 32 << 20


def _reuse_freed_memory() -> None:
    """Undo the side effect of TensorFlow's malloc tuning for ``from_generator`` (glibc only).

    A generator dataset's iterator sets M_TRIM_THRESHOLD to 128 KiB, which also freezes glibc's
    mmap threshold where it stands: at 128 KiB in a process that trains first, so every tensor
    of 128 KiB or more a training step allocates was mapped, faulted in and unmapped again, step
    after step (about 1M page faults per epoch at 1M ratings). Where earlier work had already
    raised the dynamic threshold (the flow's feature build), it froze higher, by chance. This
    sets it to glibc's ceiling every time; the trim threshold stays as TensorFlow set it.
    """
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(-3, _MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def _layers():
    """Custom layers, defined lazily so importing this module does not import Keras/TF."""
    import keras
    from keras import ops

    class AggregateTransform(keras.layers.Layer):
        """Raw aggregates -> the model's features, with the training priors frozen in: smoothed
        mean and positive rate, genre rates shrunk toward the user's own rate, and how much the
        user liked the movie's genres so far."""

        def __init__(self, prior_mean: float, prior_pos: float, **kwargs):
            super().__init__(**kwargs)
            self.prior_mean, self.prior_pos = prior_mean, prior_pos

        def get_config(self):
            return super().get_config() | {"prior_mean": self.prior_mean, "prior_pos": self.prior_pos}

        def _scalars(self, raw):
            count, total, positives = raw[:, 0:1], raw[:, 1:2], raw[:, 2:3]
            rate = F.smoothed(positives, count, self.prior_pos)
            scaled = [ops.log1p(count) / _LOG_COUNT_SCALE, F.smoothed(total, count, self.prior_mean) - 3.0, rate - 0.5]
            return rate, scaled

        def call(self, user, movie):
            users, movies = F.layout("user"), F.layout("movie")
            user_rate, user_x = self._scalars(user)
            # A genre never rated says nothing new: its rate shrinks toward the user's own rate.
            genre_rate = F.smoothed(user[:, users["user_genre_pos"]], user[:, users["user_genre_n"]], user_rate)
            _, movie_x = self._scalars(movie)
            movie_genres = movie[:, movies["movie_genres"]]
            taste = genre_rate - user_rate
            affinity = ops.sum(taste * movie_genres, axis=1, keepdims=True) / ops.maximum(
                ops.sum(movie_genres, axis=1, keepdims=True), 1.0
            )
            return ops.concatenate([*user_x, genre_rate, *movie_x, movie_genres, affinity], axis=1)

    class IdDropout(keras.layers.Layer):
        """In training, sends a few ids to the OOV index 0 so the OOV embedding learns cold start."""

        def __init__(self, rate: float, seed: int, **kwargs):
            super().__init__(**kwargs)
            self.rate = rate
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, index, training=None):
            if not training:
                return index
            drop = keras.random.uniform(ops.shape(index), seed=self.seed_generator) < self.rate
            return ops.where(drop, ops.zeros_like(index), index)

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

    return AggregateTransform, IdDropout, SnapshotLookup


def _row_sparse_adam():
    """Adam that updates only the embedding rows a batch used (TF's IndexedSlices gradients).

    Keras 3's Adam makes those gradients dense and updates every row of every table at every
    step, so a step's cost grows with the number of users and movies (measured here: 2.2x slower
    per example with MovieLens-25M-sized tables than with 1M-sized ones). Rows a batch did not use
    keep their moments until they next appear, as in TF1's sparse Adam ("lazy" Adam). Dense
    gradients (the dense layers) take Keras' own update.
    """
    import keras
    import tensorflow as tf

    class RowSparseAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            if not isinstance(gradient, tf.IndexedSlices):
                return super().update_step(gradient, variable, learning_rate)
            rows, position = tf.unique(gradient.indices)  # a row looked up twice gets one summed update
            grad = tf.cast(tf.math.unsorted_segment_sum(gradient.values, position, tf.size(rows)), variable.dtype)
            step = tf.cast(self.iterations + 1, variable.dtype)
            lr = tf.cast(learning_rate, variable.dtype)
            alpha = (
                lr
                * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, variable.dtype), step))
                / (1 - tf.pow(tf.cast(self.beta_1, variable.dtype), step))
            )
            m = self._momentums[self._get_variable_index(variable)]
            v = self._velocities[self._get_variable_index(variable)]
            m_rows = tf.gather(m, rows) * self.beta_1 + grad * (1 - self.beta_1)
            v_rows = tf.gather(v, rows) * self.beta_2 + tf.square(grad) * (1 - self.beta_2)
            self.assign(m, tf.IndexedSlices(m_rows, rows))
            self.assign(v, tf.IndexedSlices(v_rows, rows))
            self.assign_sub(variable, tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))

    return RowSparseAdam


def build_model(user_ids: np.ndarray, movie_ids: np.ndarray, priors: dict[str, float], config: TrainConfig):
    """The core NeuralCF model (GMF + MLP towers) over ids and raw aggregates."""
    import keras

    AggregateTransform, IdDropout, _ = _layers()
    dim = config.embedding_dim
    user_id = keras.Input(shape=(), dtype="int64", name="userId")
    movie_id = keras.Input(shape=(), dtype="int64", name="movieId")
    user_features = keras.Input(shape=(F.USER_WIDTH,), dtype="float32", name="user_features")
    movie_features = keras.Input(shape=(F.MOVIE_WIDTH,), dtype="float32", name="movie_features")

    def id_tower(ids, vocabulary, name):
        index = keras.layers.IntegerLookup(
            vocabulary=vocabulary.astype(np.int64), num_oov_indices=1, mask_token=None, name=f"{name}_lookup"
        )(ids)
        index = IdDropout(ID_DROPOUT_RATE, seed=config.seed, name=f"{name}_id_dropout")(index)
        # L2 on the rows a batch looks up, not on the whole table: a whole-table penalty has a
        # dense gradient, and every step would then touch every row of every table.
        regularizer = keras.regularizers.L2(EMBEDDING_L2)
        size = len(vocabulary) + 1
        gmf = keras.layers.Embedding(size, dim, activity_regularizer=regularizer, name=f"{name}_gmf")(index)
        mlp = keras.layers.Embedding(size, dim, activity_regularizer=regularizer, name=f"{name}_mlp")(index)
        return gmf, mlp

    user_gmf, user_mlp = id_tower(user_id, user_ids, "user")
    movie_gmf, movie_mlp = id_tower(movie_id, movie_ids, "movie")
    derived = AggregateTransform(priors["mean"], priors["pos"], name="aggregate_transform")(
        user_features, movie_features
    )

    gmf = keras.layers.Multiply(name="gmf")([user_gmf, movie_gmf])
    mlp = keras.layers.Concatenate(name="mlp_input")([user_mlp, movie_mlp, derived])
    mlp = keras.layers.Dense(64, activation="relu", name="mlp_1")(mlp)
    mlp = keras.layers.Dense(32, activation="relu", name="mlp_2")(mlp)
    joined = keras.layers.Concatenate(name="neumf")([gmf, mlp])
    score = keras.layers.Dense(1, activation="sigmoid", name=contract.OUTPUT)(joined)
    model = keras.Model(
        inputs={
            "userId": user_id,
            "movieId": movie_id,
            "user_features": user_features,
            "movie_features": movie_features,
        },
        outputs=score,
        name="neumf",
    )
    model.compile(
        optimizer=_row_sparse_adam()(config.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
        # Steps are small (batches of about 1k): one Python call per step cost a fifth of training's
        # CPU time at 1M ratings. Epoch-end callbacks (early stopping, MLflow) are not affected.
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def train_model(
    feature_dir: Location | Path | str,
    config: TrainConfig,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fit the core model on the training shards, early-stopping on holdout AUC."""
    import keras

    feature_dir = Location.of(feature_dir)
    train_path = feature_dir / "train"
    model = new_model(train_path, config)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=config.early_stopping_patience, restore_best_weights=True
        )
    ]
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch_end(epoch, {k: float(v) for k, v in logs.items()})
            )
        )
    damaged = []
    try:
        history = model.fit(
            make_dataset(train_path, config.batch_size, shuffle_seed=config.seed, damaged=damaged),
            validation_data=make_dataset(feature_dir / "holdout", 8192, shuffle_seed=None, damaged=damaged),
            epochs=config.epochs,
            shuffle=False,  # make_dataset shuffles row groups and rows itself
            callbacks=callbacks,
            verbose=0,
        )
    except Exception:
        if damaged:
            raise damaged[0] from None  # the shard, named, instead of TensorFlow's wrapper of it
        raise
    val_auc = history.history.get("val_auc", [0.0])
    return TrainResult(
        model=model,
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        best_epoch=int(np.argmax(val_auc)),
        train_rows=split_rows(train_path),
    )


def new_model(train_path: Location | Path | str, config: TrainConfig):
    """A freshly seeded, untrained model whose id vocabularies are the ids of the training file
    and whose priors are those of the feature folder it sits in."""
    import keras

    keras.utils.set_random_seed(config.seed)
    train_path = Location.of(train_path)
    ids = read_parquet(F.shards(train_path), columns=["userId", "movieId"])
    user_ids = np.sort(ids.get_column("userId").unique().to_numpy())
    movie_ids = np.sort(ids.get_column("movieId").unique().to_numpy())
    return build_model(user_ids, movie_ids, F.read_priors(train_path.parent), config)


def read_inputs(split_dir: Location | Path | str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A whole split as in-memory model inputs and labels."""
    return _arrow_to_inputs(read_parquet(F.shards(split_dir)).to_arrow())


def split_rows(split_dir: Location | Path | str) -> int:
    """A split's rows, from its shards' footers."""
    return sum(parquet_file(shard).metadata.num_rows for shard in F.shards(split_dir))


def predict_core(model, frame: pl.DataFrame, batch_size: int = 65536) -> np.ndarray:
    """Scores of the core model for a feature frame (one score per row)."""
    return model.predict(feature_inputs(frame), batch_size=batch_size, verbose=0).reshape(-1)


def _snapshot_table(snapshot: pl.DataFrame, id_column: str, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Ids and their aggregate rows; row 0 (all zero) stands for unknown ids."""
    table = F.feature_matrix(snapshot, names)
    ids = snapshot.get_column(id_column).to_numpy().astype(np.int64)
    return ids, np.concatenate([np.zeros((1, table.shape[1]), np.float32), table], axis=0)


def export_serving_model(model, feature_set: F.FeatureSet, out_dir: Path) -> Path:
    """Write a SavedModel with the two signatures of ``railyard.contract``, both -> ``score`` [N, 1]."""
    import keras
    import tensorflow as tf

    *_, SnapshotLookup = _layers()
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
        return {contract.OUTPUT: model(inputs, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(users)
    archive.track(movies)
    archive.add_endpoint(name=contract.SIGNATURE_NAME, fn=serve_ids)
    archive.add_endpoint(name=contract.FEATURES_SIGNATURE, fn=serve_features)
    out_dir = Path(out_dir)
    archive.write_out(str(out_dir), verbose=False)
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
        signature(**{name: tf.constant(values[start : start + batch_size]) for name, values in inputs.items()})[
            contract.OUTPUT
        ].numpy()
        for start in range(0, rows, batch_size)
    ]
    return np.concatenate(scores).reshape(-1) if scores else np.zeros(0, dtype=np.float32)


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
    rows = pairs.join(
        feature_set.holdout.unique(["userId", "movieId"], keep="first", maintain_order=True),
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
