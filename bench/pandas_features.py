"""The benchmark's baseline: the same point-in-time aggregates, written the usual pandas way.

groupby + cumsum + merge, as a data scientist would write it (no per-row Python loops): the
speed-up of railyard.features over this is only meaningful because `compare` checks that both
produce the same values, row for row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from railyard.features import GENRES, MOVIE_FEATURES, POSITIVE_RATING, USER_FEATURES, FeatureSet, split_cutoff

GENRE = [f"g{i}" for i in range(len(GENRES))]
LIKED = [f"liked{i}" for i in range(len(GENRES))]
KEYS = ["timestamp", "userId", "movieId"]
USER_SUMS = {"n": "user_n", "rating": "user_rating_sum", "label": "user_positives"}
USER_SUMS |= {g: f"user_genre_n_{i}" for i, g in enumerate(GENRE)}
USER_SUMS |= {liked: f"user_genre_pos_{i}" for i, liked in enumerate(LIKED)}
MOVIE_SUMS = {"n": "movie_n", "rating": "movie_rating_sum", "label": "movie_positives"}


def _genre_table(movies: pd.DataFrame | None) -> pd.DataFrame:
    if movies is None:
        return pd.DataFrame(columns=["movieId", *GENRE]).astype({"movieId": "int64", **dict.fromkeys(GENRE, "float32")})
    names = movies["genres"].fillna("").str.split("|")
    table = pd.DataFrame({g: names.apply(lambda genres, name=name: name in genres) for g, name in zip(GENRE, GENRES)})
    table = table.astype("float32")
    table.insert(0, "movieId", movies["movieId"].to_numpy())
    return table.drop_duplicates("movieId")


def _before(rows: pd.DataFrame, key: str, sums: dict[str, str]) -> pd.DataFrame:
    """Per (id, second): the sums over the id's strictly earlier seconds (running sum minus the
    second's own), renamed to the feature columns."""
    per_second = rows.groupby([key, "timestamp"])[list(sums)].sum()
    before = per_second.groupby(level=key).cumsum() - per_second
    return before.rename(columns=sums).astype("float32").reset_index()


def build_features_pandas(
    ratings: pd.DataFrame, movies: pd.DataFrame | None, holdout_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout) with railyard.features' columns; array features as ``<name>_<i>`` columns."""
    cutoff = split_cutoff(pl.Series(ratings["timestamp"].to_numpy()), holdout_fraction)
    genres = _genre_table(movies)
    rows = ratings[["userId", "movieId", "timestamp", "rating"]].copy()
    rows["label"] = (rows["rating"] >= POSITIVE_RATING).astype("float32")
    rows = rows.merge(genres, on="movieId", how="left")
    rows[GENRE] = rows[GENRE].fillna(0.0).astype("float32")
    rows[LIKED] = rows[GENRE].to_numpy() * rows[["label"]].to_numpy()
    rows["n"] = 1.0
    out = (
        rows[["userId", "movieId", "timestamp", "rating", "label", *GENRE]]
        .merge(_before(rows, "userId", USER_SUMS), on=["userId", "timestamp"])
        .merge(_before(rows, "movieId", MOVIE_SUMS), on=["movieId", "timestamp"])
        .rename(columns=dict(zip(GENRE, (f"movie_genres_{i}" for i in range(len(GENRES))))))
        .sort_values(KEYS, ignore_index=True)
    )
    training = out["timestamp"] < cutoff
    return out[training].reset_index(drop=True), out[~training].reset_index(drop=True)


def compare(ours: FeatureSet, theirs: tuple[pd.DataFrame, pd.DataFrame], rtol: float = 1e-5) -> None:
    """AssertionError naming the side and column unless both implementations agree row for row."""
    for side, frame, other in (("train", ours.train, theirs[0]), ("holdout", ours.holdout, theirs[1])):
        frame = frame.sort(KEYS)
        if len(frame) != len(other):
            raise AssertionError(f"{side}: {len(frame)} rows vs. {len(other)} in pandas")
        for key in KEYS:
            np.testing.assert_array_equal(frame[key].to_numpy(), other[key].to_numpy(), err_msg=f"{side}.{key}")
        for name in ("label", *USER_FEATURES, *MOVIE_FEATURES):
            column = frame[name]
            if isinstance(column.dtype, pl.Array):
                mine = np.stack(column.to_numpy())
                theirs_ = other[[f"{name}_{i}" for i in range(len(GENRES))]].to_numpy()
            else:
                mine, theirs_ = column.to_numpy(), other[name].to_numpy()
            np.testing.assert_allclose(mine, theirs_, rtol=rtol, atol=1e-6, err_msg=f"{side}.{name}")
