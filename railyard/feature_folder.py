"""A feature folder: what the feature build writes and training, validation and evaluation read,
at a local path or an S3 prefix (``railyard.locations``).

    train/part-NNNNNN.parquet      the training rows in time order, shards in number order
    holdout/part-NNNNNN.parquet    the holdout rows, likewise
    user_snapshot.parquet          userId + USER_FEATURES: totals over the training rows
    movie_snapshot.parquet         movieId + MOVIE_FEATURES: every training or catalogue movie
    meta.json                      cut-off, priors, fingerprint, rows; written last: a folder
                                   without it is incomplete

Rows keep their ``timestamp`` column (the time split's and any later window's key).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from railyard.feature_spec import FEATURE_CODE_VERSION, GENRES
from railyard.locations import Location, read_parquet

SPLITS = ("train", "holdout")  # folders of Parquet shards, part-NNNNNN.parquet in row order
SNAPSHOT_FILES = ("user_snapshot.parquet", "movie_snapshot.parquet")
PARQUET_COMPRESSION = "lz4"
PARQUET_ROW_GROUP = 65_536  # the training input shuffles row groups: keep them small enough to mix
# The one-machine build writes a split as shards of this many rows, several at once: pyarrow, which
# writes the page checksums, encodes a file on one core (bench/bench_parquet.py).
SHARD_ROWS = 16 * PARQUET_ROW_GROUP
SHARD_WRITERS = os.cpu_count() or 1


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare by
class FeatureSet:
    train: pl.DataFrame
    holdout: pl.DataFrame
    cutoff_ts: int  # holdout = timestamp >= cutoff_ts
    user_snapshot: pl.DataFrame  # userId + USER_FEATURES: totals over the training rows
    movie_snapshot: pl.DataFrame  # movieId + MOVIE_FEATURES (training movies and every catalogue movie)
    priors: dict[str, float]  # mean rating and positive rate of the training rows
    fingerprint: str

    def without_training_rows(self) -> FeatureSet:
        """The same set with an empty ``train`` (same schema), for steps that need only the rest.
        The holdout is copied into buffers of its own: as a slice of the whole build it would keep
        every training row alive (``rechunk`` and ``filter`` may share buffers too)."""
        holdout = self.holdout.select(pl.all().gather(pl.int_range(pl.len())))
        return replace(self, train=self.train.clear(), holdout=holdout)


def write_feature_set(
    feature_set: FeatureSet, out_dir: Location | Path | str, train_selection: dict | None = None
) -> Location:
    """Parquet shards (``SHARD_ROWS`` each, written in parallel) and snapshots, plus
    ``meta.json`` (written last: a folder without it is incomplete), at a local path or an S3
    prefix. ``train_selection`` says which training rows alone the set holds (a warm start's
    ``model_input.Warm``, as a dict; None: all)."""
    out = clear_folder(out_dir)
    shards = [
        (frame.slice(start, SHARD_ROWS), out, split, number)
        for split, frame in zip(SPLITS, (feature_set.train, feature_set.holdout))
        for number, start in enumerate(range(0, max(frame.height, 1), SHARD_ROWS))
    ]
    with ThreadPoolExecutor(SHARD_WRITERS) as pool:
        list(pool.map(lambda shard: write_shard(*shard), shards))
    write_snapshots(feature_set.user_snapshot, feature_set.movie_snapshot, out)
    rows = {"train": len(feature_set.train), "holdout": len(feature_set.holdout)}
    return write_meta(out, feature_set.cutoff_ts, feature_set.priors, feature_set.fingerprint, rows, train_selection)


def clear_folder(out_dir: Location | Path | str) -> Location:
    """The feature folder, emptied first: a build that ran there before and failed left no
    ``meta.json``, but maybe shards that the new build would not overwrite."""
    out = Location.of(out_dir)
    out.remove()
    return out


def write_shard(frame: pl.DataFrame, out_dir: Location | Path | str, split: str, number: int) -> None:
    """Shard ``number`` of a split: shards in number order are the split's rows in order."""
    target = Location.of(out_dir) / split / f"part-{number:06d}.parquet"
    target.write_parquet(frame, compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP)


def write_snapshots(users: pl.DataFrame, movies: pl.DataFrame, out_dir: Location | Path | str) -> None:
    for name, frame in zip(SNAPSHOT_FILES, (users, movies)):
        target = Location.of(out_dir) / name
        target.write_parquet(frame, compression=PARQUET_COMPRESSION, row_group_size=PARQUET_ROW_GROUP)


def shards(split_dir: Location | Path | str) -> list[Location]:
    """A split's shards, in row order."""
    found = Location.of(split_dir).glob("part-*.parquet")
    if not found:
        raise FileNotFoundError(f"{split_dir} holds no feature shards (part-*.parquet)")
    return found


def write_meta(
    out_dir: Location | Path | str,
    cutoff_ts: int,
    priors: dict[str, float],
    fingerprint: str,
    rows: dict[str, int],
    train_selection: dict | None = None,
) -> Location:
    """``meta.json``, the mark of a complete feature folder: written last, whole."""
    meta = {
        "feature_code_version": FEATURE_CODE_VERSION,
        "cutoff_ts": cutoff_ts,
        "priors": priors,
        "fingerprint": fingerprint,
        "genres": list(GENRES),
        "rows": rows,
        "train_selection": train_selection,
    }
    out = Location.of(out_dir)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def read_train_selection(out_dir: Location | Path | str) -> dict | None:
    """Which training rows alone the folder holds (``write_feature_set``'s ``train_selection``)."""
    return _read_meta(Location.of(out_dir)).get("train_selection")


def read_priors(out_dir: Location | Path | str) -> dict[str, float]:
    """The training priors of a feature folder (what the model's transformations freeze)."""
    return _read_meta(Location.of(out_dir))["priors"]


def read_feature_set(out_dir: Location | Path | str, *, with_training_rows: bool = True) -> FeatureSet:
    """A feature folder; without its training rows (``train`` empty, same schema) for steps that
    need only the rest: training streams them from the shards."""
    out = Location.of(out_dir)
    meta = _read_meta(out)
    train_shards = shards(out / "train")
    train = read_parquet(train_shards) if with_training_rows else read_parquet(train_shards[:1], schema_only=True)
    holdout = read_parquet(shards(out / "holdout"))
    users, movies = (read_parquet([out / name]) for name in SNAPSHOT_FILES)
    return FeatureSet(train, holdout, meta["cutoff_ts"], users, movies, meta["priors"], meta["fingerprint"])


def _read_meta(out_dir: Location) -> dict:
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no complete feature set (meta.json missing)")
    meta = json.loads(meta_path.read_text())
    if meta["feature_code_version"] != FEATURE_CODE_VERSION:
        raise ValueError(
            f"{out_dir} was built by feature code version {meta['feature_code_version']}, "
            f"this is {FEATURE_CODE_VERSION}: rebuild the features"
        )
    return meta
