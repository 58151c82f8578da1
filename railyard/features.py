"""Point-in-time features, the label and the time-based split, computed column-wise with Polars.

- Label: ``rating >= 3.5``.
- Split: the newest slice of time is the holdout (every rating at or after the cut-off timestamp);
  ratings sharing a timestamp are never split across the two sides.
- Training rows: a user's or movie's history statistics use only ratings with a timestamp
  strictly before the row's own (ratings at the same second do not see each other).
- Holdout rows: the snapshot of those statistics over all training rows, exactly what the served
  model holds in its lookup tables, so holdout features never see a holdout label.
- Statistics are smoothed toward global priors of the training rows (``SMOOTHING`` pseudo-ratings),
  so a user with one rating is not scored as if one rating said everything. The priors are two
  constants of the training window, not any user's or movie's history.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from railyard.fsutil import atomic_write_text
from railyard.loaders import MOVIELENS_GENRES, NO_GENRES, RawDataset

# Bump whenever a feature's meaning changes: it is part of the data fingerprint and code version.
FEATURE_CODE_VERSION = "1"
POSITIVE_RATING = 3.5
SMOOTHING = 5.0
GENRES = (*MOVIELENS_GENRES, NO_GENRES)
USER_FEATURES = ("user_n", "user_mean", "user_pos", "user_genre_pos")
MOVIE_FEATURES = ("movie_n", "movie_mean", "movie_pos", "movie_genres")
FEATURE_FILES = ("train.parquet", "holdout.parquet", "user_snapshot.parquet", "movie_snapshot.parquet")
HISTORY_SLICE_ROWS = 1_000_000  # bounds the memory of the per-user genre sums
PARQUET_ROW_GROUP = 65_536  # the training input shuffles row groups: keep them small enough to mix

_GENRE_COLUMNS = tuple(f"genre_{i}" for i in range(len(GENRES)))
_GENRE_POS_COLUMNS = tuple(f"genre_pos_{i}" for i in range(len(GENRES)))
_GENRE_ARRAY = pl.Array(pl.Float32, len(GENRES))


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare by
class FeatureSet:
    train: pl.DataFrame
    holdout: pl.DataFrame
    cutoff_ts: int  # holdout = timestamp >= cutoff_ts
    user_snapshot: pl.DataFrame  # userId + USER_FEATURES over all training rows
    movie_snapshot: pl.DataFrame  # movieId + MOVIE_FEATURES (training movies and every catalogue movie)
    priors: dict[str, float]  # mean rating and positive rate of the training rows
    fingerprint: str

    def without_training_rows(self) -> FeatureSet:
        """The same set with an empty ``train`` (same schema), for steps that need only the rest."""
        return replace(self, train=self.train.clear())

    def cold_user(self) -> dict:
        return cold_user(self.priors)

    def cold_movie(self) -> dict:
        return cold_movie(self.priors)


def cold_user(priors: dict[str, float]) -> dict:
    """Features of a user with no history: the priors."""
    return {
        "user_n": 0.0,
        "user_mean": priors["mean"],
        "user_pos": priors["pos"],
        "user_genre_pos": [priors["pos"]] * len(GENRES),
    }


def cold_movie(priors: dict[str, float]) -> dict:
    """Features of a movie neither rated in training nor in the catalogue: priors, no genres."""
    return {
        "movie_n": 0.0,
        "movie_mean": priors["mean"],
        "movie_pos": priors["pos"],
        "movie_genres": [0.0] * len(GENRES),
    }


def split_cutoff(timestamps: pl.Series, holdout_fraction: float) -> int:
    """The timestamp from which the newest ``holdout_fraction`` of ratings (or a little less) begins.

    Ties stay on one side, so the holdout can come out smaller than asked; it is never empty and
    never everything, or the data cannot be split by time and that is an error.
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    ordered = timestamps.sort()
    if len(ordered) < 2 or ordered[0] == ordered[-1]:
        raise ValueError("cannot split by time: the ratings need at least two distinct timestamps")
    position = min(int(len(ordered) * (1 - holdout_fraction)), len(ordered) - 1)
    cutoff = int(ordered[position])
    if cutoff == ordered[0]:  # the oldest timestamp covers the training share: next one up
        cutoff = int(ordered.filter(ordered > cutoff)[0])
    return cutoff


def movie_genres(movies: pl.DataFrame | None) -> pl.DataFrame:
    """movieId + one 0/1 Float32 column per genre, from MovieLens' pipe-separated genre strings."""
    if movies is None:
        return pl.DataFrame(
            schema={"movieId": pl.Int64} | {column: pl.Float32 for column in _GENRE_COLUMNS}
        )
    names = movies.select("movieId", pl.col("genres").fill_null("").str.split("|").alias("names"))
    return names.select(
        "movieId",
        *(pl.col("names").list.contains(genre).cast(pl.Float32).alias(column) for genre, column in zip(GENRES, _GENRE_COLUMNS)),
    ).unique("movieId", keep="first", maintain_order=True)


def build_features(
    ratings: pl.DataFrame, movies: pl.DataFrame | None, holdout_fraction: float, fingerprint: str = ""
) -> FeatureSet:
    cutoff = split_cutoff(ratings.get_column("timestamp"), holdout_fraction)
    genres = movie_genres(movies)
    rows = ratings.select(
        "userId", "movieId", "timestamp", "rating", (pl.col("rating") >= POSITIVE_RATING).cast(pl.Float32).alias("label")
    )
    train = rows.filter(pl.col("timestamp") < cutoff).sort("timestamp", "userId", "movieId")
    holdout = rows.filter(pl.col("timestamp") >= cutoff).sort("timestamp", "userId", "movieId")
    priors = {
        "mean": float(train.get_column("rating").mean()),
        "pos": float(train.get_column("label").mean()),
    }

    def with_genres(chunk: pl.DataFrame) -> pl.DataFrame:
        """Per rating: the movie's genres (0/1) and the same again where the rating is positive."""
        return (
            chunk.join(genres, on="movieId", how="left", maintain_order="left")
            .with_columns(pl.col(_GENRE_COLUMNS).fill_null(0.0))
            .with_columns((pl.col(g) * pl.col("label")).alias(p) for g, p in zip(_GENRE_COLUMNS, _GENRE_POS_COLUMNS))
        )

    user_sums = ("rating", "label", *_GENRE_COLUMNS, *_GENRE_POS_COLUMNS)
    user_history, user_snapshot = _history(
        train, "userId", user_sums, lambda sums: _user_features(sums, priors), add_columns=with_genres
    )
    movie_history, movie_totals = _history(
        train, "movieId", ("rating", "label"), lambda sums: _movie_history(sums, priors)
    )
    movie_snapshot = _movie_snapshot(movie_totals, genres, priors)
    genre_arrays = genres.select("movieId", _genre_array(_GENRE_COLUMNS).alias("movie_genres"))
    train_genres = train.select("movieId").join(genre_arrays, on="movieId", how="left", maintain_order="left")

    labelled = ("userId", "movieId", "timestamp", "rating", "label")
    train_features = pl.concat(
        [
            train.select(*labelled),
            user_history,
            movie_history,
            train_genres.select(_fill_cold({"movie_genres": cold_movie(priors)["movie_genres"]})),
        ],
        how="horizontal",
    ).select(*labelled, *USER_FEATURES, *MOVIE_FEATURES)
    holdout_features = (
        holdout.select(*labelled)
        .join(user_snapshot, on="userId", how="left")
        .join(movie_snapshot, on="movieId", how="left")
        .with_columns(_fill_cold(cold_user(priors)) + _fill_cold(cold_movie(priors)))
        .select(*labelled, *USER_FEATURES, *MOVIE_FEATURES)
    )
    return FeatureSet(train_features, holdout_features, cutoff, user_snapshot, movie_snapshot, priors, fingerprint)


def build_feature_set(dataset: RawDataset, holdout_fraction: float) -> FeatureSet:
    """Features of a loaded data set, fingerprinted by its files, the feature code and the split."""
    fingerprint = dataset.fingerprint(f"features={FEATURE_CODE_VERSION}", f"holdout_fraction={holdout_fraction!r}")
    return build_features(dataset.ratings, dataset.movies, holdout_fraction, fingerprint)


def _history(
    rows: pl.DataFrame,
    key: str,
    columns: tuple[str, ...],
    features: Callable[[pl.DataFrame], pl.DataFrame],
    add_columns: Callable[[pl.DataFrame], pl.DataFrame] = lambda chunk: chunk,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``features`` of each key's history, per row of ``rows`` (in their order, over the key's rows
    with an earlier timestamp) and per key (over all its rows, the snapshot).

    Works through the rows in key order, a slice of whole keys at a time, so ``add_columns``
    (the user's 40 genre columns) never exists for all rows at once.
    """
    order = rows.select(pl.arg_sort_by(key, "timestamp")).to_series()
    ordered = rows.select(*dict.fromkeys((key, "timestamp", "movieId", "rating", "label")))[order]
    per_row, per_key = [], []
    for start, length in _whole_key_slices(ordered.get_column(key), HISTORY_SLICE_ROWS):
        chunk = add_columns(ordered.slice(start, length))
        per_row.append(features(_sums_before(chunk, key, columns)))
        per_key.append(features(_sums_total(chunk, key, columns)))
    history = pl.concat(per_row, rechunk=True)
    del per_row  # copied into one chunk: let the slices go before the scatter copies it again
    # Back to the rows' own order: scatter by the sort permutation.
    return history[order.arg_sort()], pl.concat(per_key)


def _whole_key_slices(keys: pl.Series, rows_per_slice: int) -> list[tuple[int, int]]:
    """(start, length) slices of about ``rows_per_slice`` rows of sorted ``keys``, never splitting a key."""
    key_ends = keys.rle().struct.field("len").cum_sum().to_numpy().astype(np.int64)
    targets = np.arange(rows_per_slice, len(keys), rows_per_slice)
    cuts = np.unique(key_ends[np.searchsorted(key_ends, targets)])  # the first key end at or past each target
    bounds = [0, *cuts[cuts < len(keys)].tolist(), len(keys)]
    return [(start, end - start) for start, end in zip(bounds, bounds[1:])]


def _sums_before(ordered: pl.DataFrame, key: str, columns: tuple[str, ...]) -> pl.DataFrame:
    """Per row of ``ordered`` (sorted by key and timestamp): count and sums of ``columns`` over the
    key's rows with an earlier timestamp (ratings at the same second never see each other)."""
    new_key = (pl.col(key) != pl.col(key).shift(1)).fill_null(True)
    new_second = new_key | (pl.col("timestamp") != pl.col("timestamp").shift(1))
    ordered = ordered.with_columns(
        new_key.alias("_new_key"), new_second.alias("_new_second"), pl.lit(1.0, pl.Float32).alias("n")
    )

    def before(column: str) -> pl.Expr:
        # With rows sorted by key, a global running sum minus its value where the key's rows begin
        # is the key's own running sum (no per-key window needed); Float64 keeps it exact.
        earlier = pl.col(column).cast(pl.Float64).cum_sum() - pl.col(column)
        within_key = earlier - pl.when(pl.col("_new_key")).then(earlier).forward_fill()
        # Taken at the first row of each second and carried over its ties.
        return pl.when(pl.col("_new_second")).then(within_key).forward_fill().cast(pl.Float32).alias(column)

    return ordered.select(*(before(c) for c in ("n", *columns)))


def _sums_total(rows: pl.DataFrame, key: str, columns: tuple[str, ...]) -> pl.DataFrame:
    return rows.group_by(key).agg(
        pl.len().cast(pl.Float32).alias("n"), *(pl.col(c).sum().cast(pl.Float32) for c in columns)
    ).sort(key)


def _smoothed(total: str, prior: float | pl.Expr, count: str = "n") -> pl.Expr:
    return ((pl.col(total) + SMOOTHING * prior) / (pl.col(count) + SMOOTHING)).cast(pl.Float32)


def _genre_array(columns: tuple[str, ...] | list[pl.Expr]) -> pl.Expr:
    return pl.concat_arr(list(columns)).cast(_GENRE_ARRAY)


def _user_features(sums: pl.DataFrame, priors: dict[str, float]) -> pl.DataFrame:
    keys = [c for c in ("userId", "timestamp") if c in sums.columns]
    user_pos = _smoothed("label", priors["pos"])
    # Genre rates shrink toward the user's own rate: a genre never rated says nothing new.
    genre_pos = [
        _smoothed(positive, user_pos, count=seen) for seen, positive in zip(_GENRE_COLUMNS, _GENRE_POS_COLUMNS)
    ]
    return sums.select(
        *keys,
        pl.col("n").alias("user_n"),
        _smoothed("rating", priors["mean"]).alias("user_mean"),
        user_pos.alias("user_pos"),
        _genre_array(genre_pos).alias("user_genre_pos"),
    )


def _movie_history(sums: pl.DataFrame, priors: dict[str, float]) -> pl.DataFrame:
    """The history part of the movie features (its genres are static, joined separately)."""
    keys = [c for c in ("movieId", "timestamp") if c in sums.columns]
    return sums.select(
        *keys,
        pl.col("n").alias("movie_n"),
        _smoothed("rating", priors["mean"]).alias("movie_mean"),
        _smoothed("label", priors["pos"]).alias("movie_pos"),
    )


def _movie_snapshot(history: pl.DataFrame, genres: pl.DataFrame, priors: dict[str, float]) -> pl.DataFrame:
    """Every movie rated in training (its ``history``) or listed in the catalogue, with its genres."""
    catalogue = genres.select("movieId").join(history.select("movieId"), on="movieId", how="anti")
    unrated = _movie_history(catalogue.with_columns(pl.lit(0.0, pl.Float32).alias(c) for c in ("n", "rating", "label")), priors)
    return (
        pl.concat([history, unrated])
        .join(genres, on="movieId", how="left")
        .with_columns(_genre_array(_GENRE_COLUMNS).fill_null(pl.lit([0.0] * len(GENRES), _GENRE_ARRAY)).alias("movie_genres"))
        .select("movieId", *MOVIE_FEATURES)
        .sort("movieId")
    )


def _fill_cold(values: dict) -> list[pl.Expr]:
    """Cold-start values for rows whose id is missing from a snapshot."""
    filled = []
    for name, value in values.items():
        if isinstance(value, list):
            filled.append(pl.col(name).fill_null(pl.lit(value, _GENRE_ARRAY)))
        else:
            filled.append(pl.col(name).fill_null(pl.lit(value, pl.Float32)))
    return filled


def write_feature_set(feature_set: FeatureSet, out_dir: Path) -> Path:
    """Parquet files plus ``meta.json`` (written last: a folder without it is incomplete)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = (feature_set.train, feature_set.holdout, feature_set.user_snapshot, feature_set.movie_snapshot)
    for name, frame in zip(FEATURE_FILES, frames):
        frame.write_parquet(out_dir / name, row_group_size=PARQUET_ROW_GROUP)
    meta = {
        "feature_code_version": FEATURE_CODE_VERSION,
        "cutoff_ts": feature_set.cutoff_ts,
        "priors": feature_set.priors,
        "fingerprint": feature_set.fingerprint,
        "genres": list(GENRES),
        "rows": {"train": len(feature_set.train), "holdout": len(feature_set.holdout)},
    }
    atomic_write_text(out_dir / "meta.json", json.dumps(meta, indent=1))
    return out_dir


def read_feature_set(out_dir: Path) -> FeatureSet:
    out_dir = Path(out_dir)
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no complete feature set (meta.json missing)")
    meta = json.loads(meta_path.read_text())
    if meta["feature_code_version"] != FEATURE_CODE_VERSION:
        raise ValueError(
            f"{out_dir} was built by feature code version {meta['feature_code_version']}, "
            f"this is {FEATURE_CODE_VERSION}: rebuild the features"
        )
    train, holdout, users, movies = (pl.read_parquet(out_dir / name) for name in FEATURE_FILES)
    return FeatureSet(train, holdout, meta["cutoff_ts"], users, movies, meta["priors"], meta["fingerprint"])
