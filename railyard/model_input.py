"""The input pipeline every model kind trains on: a feature folder's shards as model inputs.

One row's inputs are the standard inputs of every kind (``railyard.kinds.base``): ``userId`` and
``movieId`` (int64 [N]) and the two declared vectors ``user_features`` and ``movie_features``
(float32 [N, USER_WIDTH] and [N, MOVIE_WIDTH], the positions given by ``layout``); the label is
float32 [N, 1].

The three windows, all cut by time (ties always on one side):
- the **holdout** (``RAILYARD_HOLDOUT_FRACTION``, the newest ratings), cut by the feature build:
  the gate, the reports and the comparison with production use it, nothing else;
- the **validation window** (``RAILYARD_VALIDATION_FRACTION`` of the training rows, the newest
  ones before the cut-off), carved here at training time from the training shards' ``timestamp``
  column: early stopping and any selection a kind makes use it;
- the **fit rows**: the training rows before the validation window. The id vocabularies of a kind
  come from them, so a user first seen in the validation window is as unknown there as a new user
  is in the holdout.

A warm start (``railyard.warm_start``) trains on the rows since the previous version's cut-off
and a replay sample of the older ones (``replayed``: a share sized to the new rows, the same rows
every epoch), written alone by the feature build, or else filtered once into a split of their own
(``warm_rows``): both windows are then cut from those rows, so the validation window is the
newest of them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.compute as pc

from railyard import feature_spec as spec
from railyard import features as F
from railyard import parquet_io
from railyard.feature_folder import SHARD_WRITERS, read_train_selection, write_shard
from railyard.locations import Location, parquet_file, read_parquet

INPUT_NAMES = ("userId", "movieId", "user_features", "movie_features")
WARM_SPLIT = "warm"  # beside a feature folder's train/ and holdout/: the rows a warm start reads
VECTORS = ("user", "movie")  # the entities whose declared aggregates are an input vector each


def layout(entity: str) -> dict[str, slice]:
    """Where each declared aggregate of ``entity`` ("user" or "movie") sits in its input vector
    (``feature_spec.layout``, read when called: a declaration added later is in it)."""
    if entity not in VECTORS:
        raise ValueError(f"no declared entity {entity!r}: use one of {sorted(VECTORS)}")
    return spec.layout(entity)


def declared_aggregates() -> dict[str, str]:
    """Every declared aggregate's name and its entity."""
    return {name: entity for entity in VECTORS for name in layout(entity)}


def feature_inputs(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """The standard inputs (and the ``features`` signature's) for rows holding ids and the
    USER_FEATURES and MOVIE_FEATURES columns."""
    return {
        "userId": frame.get_column("userId").to_numpy().astype(np.int64, copy=False),
        "movieId": frame.get_column("movieId").to_numpy().astype(np.int64, copy=False),
        "user_features": F.feature_matrix(frame, spec.names("user")),
        "movie_features": F.feature_matrix(frame, spec.names("movie")),
    }


def _arrow_to_inputs(table) -> tuple[dict[str, np.ndarray], np.ndarray]:
    frame = pl.from_arrow(table)
    labels = frame.get_column("label").to_numpy().astype(np.float32, copy=False).reshape(-1, 1)
    return feature_inputs(frame), labels


@dataclass(frozen=True)
class Warm:
    """Which training rows a warm start reads: those at or after ``since`` (the previous
    version's cut-off) and the ``replay`` share of the older ones."""

    since: int
    replay: float
    seed: int

    def keeps(self, users: np.ndarray, movies: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        return (timestamps >= self.since) | replayed(users, movies, timestamps, self.replay, self.seed)

    def of(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``frame`` (ids and timestamps among its columns) it keeps, in order."""
        return frame.filter(
            self.keeps(*(frame.get_column(name).to_numpy() for name in ("userId", "movieId", "timestamp")))
        )


def replayed(users: np.ndarray, movies: np.ndarray, timestamps: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A fixed pseudo-random ``share`` of the rows, by a hash of each rating's identity (the same
    rows every epoch and every time, whatever the order or the sharding)."""
    mixed = np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)  # arrays wrap silently; scalars would warn
    for column, factor in ((users, 0xBF58476D1CE4E5B9), (movies, 0x94D049BB133111EB), (timestamps, 0xD6E8FEB86659FD93)):
        mixed = (mixed ^ column.astype(np.uint64)) * np.uint64(factor)
        mixed ^= mixed >> np.uint64(31)
    return (mixed >> np.uint64(11)) < np.uint64(share * 2.0**53)


@dataclass(frozen=True, eq=False)
class Windows:
    """The training split (or a warm start's rows of it) cut in two by time: rows before
    ``validation_from`` are fit on, the rest (the newest share, ties on one side) is the
    validation window."""

    train_dir: Location
    validation_from: int  # the first timestamp of the validation window
    fit_rows: int
    validation_rows: int
    user_ids: np.ndarray  # the fit rows' distinct ids, sorted: a kind's id vocabularies
    movie_ids: np.ndarray

    def fit_dataset(self, batch_size: int, seed: int, damaged: list | None = None):
        """The fit rows, re-shuffled every epoch."""
        return _dataset(self.train_dir, batch_size, seed, damaged, self._rows(validation=False), self.fit_rows)

    def validation_dataset(self, batch_size: int, damaged: list | None = None, seed: int | None = None):
        """The validation window: in order, or re-shuffled every epoch with ``seed``."""
        return _dataset(self.train_dir, batch_size, seed, damaged, self._rows(validation=True), self.validation_rows)

    def _rows(self, validation: bool):
        """A row mask of a table: the validation window's rows, or the fit rows."""
        compare = pc.greater_equal if validation else pc.less
        return lambda table: compare(table["timestamp"], self.validation_from)


class NoValidationWindow(ValueError):
    """The training rows cannot be cut by time (fewer than two distinct timestamps)."""


def carve_validation(train_dir: Location | Path | str, fraction: float) -> Windows:
    """The validation window: the last ``fraction`` of the training rows (or of a warm start's
    rows) by time, ties on one side (the holdout's rule, ``features.split_cutoff``), so it is
    never empty and never everything."""
    train_dir = Location.of(train_dir)
    rows = read_parquet(F.shards(train_dir), columns=["userId", "movieId", "timestamp"])
    try:
        cutoff = F.split_cutoff(rows.get_column("timestamp"), fraction)
    except ValueError as error:
        raise NoValidationWindow(f"the training rows cannot give a validation window: {error}") from None
    fit = rows.filter(pl.col("timestamp") < cutoff)
    return Windows(
        train_dir,
        validation_from=cutoff,
        fit_rows=len(fit),
        validation_rows=len(rows) - len(fit),
        user_ids=np.sort(fit.get_column("userId").unique().to_numpy()).astype(np.int64),
        movie_ids=np.sort(fit.get_column("movieId").unique().to_numpy()).astype(np.int64),
    )


def split_timestamps(split_dir: Location | Path | str) -> np.ndarray:
    """A split's timestamps (what a warm start's replay is sized by)."""
    return read_parquet(F.shards(Location.of(split_dir)), columns=["timestamp"]).get_column("timestamp").to_numpy()


def warm_rows(feature_dir: Location | Path | str, warm: Warm) -> Location:
    """The split of exactly the training rows ``warm`` keeps: the training split itself when
    the build wrote those rows alone (its ``meta.json`` says so), else ``write_warm_rows``."""
    feature_dir = Location.of(feature_dir)
    if read_train_selection(feature_dir) == asdict(warm):
        return feature_dir / "train"
    return write_warm_rows(feature_dir, warm)


def write_warm_rows(feature_dir: Location | Path | str, warm: Warm) -> Location:
    """The training rows ``warm`` keeps, filtered once into shards of their own beside the
    training split (in its order): every pass of the warm start reads only them (at 25M ratings,
    2.1M of 18M rows) instead of filtering the whole split again."""
    feature_dir = Location.of(feature_dir)
    out = feature_dir / WARM_SPLIT
    out.remove()  # what an earlier attempt left

    def keep(numbered: tuple[int, Location]) -> int:
        number, shard = numbered
        with parquet_io.reading(shard):
            frame = read_parquet([shard])
        kept = warm.of(frame)
        if kept.height:
            write_shard(kept, feature_dir, WARM_SPLIT, number)
        return kept.height

    with ThreadPoolExecutor(SHARD_WRITERS) as pool:
        if not sum(pool.map(keep, enumerate(F.shards(feature_dir / "train")))):
            raise NoValidationWindow("a warm start has no training rows: none since the cut-off, none replayed")
    return out


def _row_groups(split_dir: Location, rng: np.random.Generator | None, keep=None) -> Iterator:
    """Stream a split's feature shards a row group at a time (``keep``: a row mask of a table).

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
        if keep is not None:
            table = table.filter(keep(table))
            if not table.num_rows:
                continue
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
    """tf.data pipeline over a whole split's feature shards (``path``: the split's folder, local
    or on S3), re-shuffled every epoch when seeded (``Windows`` gives the fit rows and the
    validation window of the training split)."""
    path = Location.of(path)
    return _dataset(path, batch_size, shuffle_seed, damaged, None, split_rows(path))


def _dataset(path: Location, batch_size: int, shuffle_seed: int | None, damaged, keep, rows: int):
    """Python hands over whole row groups (``keep``: their rows to keep); tf.data cuts them into
    batches in C++ (``rebatch``), so no Python runs per training step beside Keras' own loop.
    tf.data reports an error of the generator as its own ``InvalidArgumentError``: a damaged
    shard is also appended to ``damaged``."""
    import tensorflow as tf

    epoch_counter = iter(range(1_000_000))

    def generator():
        _reuse_freed_memory()  # here, not earlier: TensorFlow tunes malloc when the iterator starts
        rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed + next(epoch_counter))
        try:
            yield from _row_groups(path, rng, keep)
        except parquet_io.DamagedParquet as error:
            if damaged is not None:
                damaged.append(error)
            raise

    dataset = tf.data.Dataset.from_generator(generator, output_signature=input_signature()).rebatch(batch_size)
    # A known epoch length lets Keras end epochs without hitting (and warning about) the end of data.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-rows // batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def input_signature():
    """The standard inputs and the label as tf.data's TensorSpecs."""
    import tensorflow as tf

    return (
        {
            "userId": tf.TensorSpec((None,), tf.int64),
            "movieId": tf.TensorSpec((None,), tf.int64),
            "user_features": tf.TensorSpec((None, spec.width("user")), tf.float32),
            "movie_features": tf.TensorSpec((None, spec.width("movie")), tf.float32),
        },
        tf.TensorSpec((None, 1), tf.float32),
    )


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


def read_inputs(split_dir: Location | Path | str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A whole split as in-memory model inputs and labels."""
    return _arrow_to_inputs(read_parquet(F.shards(split_dir)).to_arrow())


def split_rows(split_dir: Location | Path | str) -> int:
    """A split's rows, from its shards' footers."""
    return sum(parquet_file(shard).metadata.num_rows for shard in F.shards(split_dir))
