"""The benchmark's baseline: the same point-in-time features, written the usual pandas way.

groupby + cumsum + merge, as a data scientist would write it (no per-row Python loops): the
speed-up of railyard.features over this is only meaningful because `compare` checks that both
produce the same values, row for row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from railyard.features import (
    GENRES,
    MOVIE_FEATURES,
    POSITIVE_RATING,
    SMOOTHING,
    USER_FEATURES,
    FeatureSet,
    split_cutoff,
)

GENRE = [f"g{i}" for i in range(len(GENRES))]
LIKED = [f"liked{i}" for i in range(len(GENRES))]
KEYS = ["timestamp", "userId", "movieId"]


def _smooth(total, count, prior):
    return ((total + SMOOTHING * prior) / (count + SMOOTHING)).astype("float32")


def _genre_table(movies: pd.DataFrame | None) -> pd.DataFrame:
    if movies is None:
        return pd.DataFrame(columns=["movieId", *GENRE]).astype({"movieId": "int64", **dict.fromkeys(GENRE, "float32")})
    names = movies["genres"].fillna("").str.split("|")
    table = pd.DataFrame({g: names.apply(lambda genres, name=name: name in genres) for g, name in zip(GENRE, GENRES)})
    table = table.astype("float32")
    table.insert(0, "movieId", movies["movieId"].to_numpy())
    return table.drop_duplicates("movieId")


def _user_columns(sums: pd.DataFrame, priors: dict) -> pd.DataFrame:
    out = pd.DataFrame(index=sums.index)
    out["user_n"] = sums["n"].astype("float32")
    out["user_mean"] = _smooth(sums["rating"], sums["n"], priors["mean"])
    out["user_pos"] = _smooth(sums["label"], sums["n"], priors["pos"])
    for i in range(len(GENRES)):
        out[f"user_genre_pos_{i}"] = _smooth(sums[LIKED[i]], sums[GENRE[i]], out["user_pos"])
    return out


def _movie_columns(sums: pd.DataFrame, priors: dict) -> pd.DataFrame:
    out = pd.DataFrame(index=sums.index)
    out["movie_n"] = sums["n"].astype("float32")
    out["movie_mean"] = _smooth(sums["rating"], sums["n"], priors["mean"])
    out["movie_pos"] = _smooth(sums["label"], sums["n"], priors["pos"])
    return out


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
    train = rows[rows["timestamp"] < cutoff]
    holdout = rows[rows["timestamp"] >= cutoff]
    priors = {"mean": train["rating"].mean(), "pos": train["label"].astype("float64").mean()}

    user_sums = ["n", "rating", "label", *GENRE, *LIKED]
    movie_sums = ["n", "rating", "label"]
    # Per (id, second): sums; a running sum per id minus the second's own = strictly earlier.
    per_user = train.groupby(["userId", "timestamp"])[user_sums].sum()
    user_before = per_user.groupby(level="userId").cumsum() - per_user
    per_movie = train.groupby(["movieId", "timestamp"])[movie_sums].sum()
    movie_before = per_movie.groupby(level="movieId").cumsum() - per_movie

    train_out = (
        train[["userId", "movieId", "timestamp", "rating", "label", *GENRE]]
        .merge(_user_columns(user_before, priors).reset_index(), on=["userId", "timestamp"])
        .merge(_movie_columns(movie_before, priors).reset_index(), on=["movieId", "timestamp"])
        .rename(columns=dict(zip(GENRE, (f"movie_genres_{i}" for i in range(len(GENRES))))))
    )

    user_snapshot = _user_columns(train.groupby("userId")[user_sums].sum(), priors).reset_index()
    movie_totals = train.groupby("movieId")[movie_sums].sum()
    catalogue = genres.set_index("movieId").index.difference(movie_totals.index)
    movie_totals = pd.concat([movie_totals, pd.DataFrame(0.0, index=catalogue, columns=movie_sums)])
    movie_totals.index.name = "movieId"
    movie_snapshot = _movie_columns(movie_totals, priors).reset_index().merge(genres, on="movieId", how="left")
    holdout_out = (
        holdout[["userId", "movieId", "timestamp", "rating", "label"]]
        .merge(user_snapshot, on="userId", how="left")
        .merge(movie_snapshot, on="movieId", how="left")
        .rename(columns=dict(zip(GENRE, (f"movie_genres_{i}" for i in range(len(GENRES))))))
    )
    cold = {
        "user_n": 0.0,
        "user_mean": priors["mean"],
        "user_pos": priors["pos"],
        "movie_n": 0.0,
        "movie_mean": priors["mean"],
        "movie_pos": priors["pos"],
    }
    cold |= {f"user_genre_pos_{i}": priors["pos"] for i in range(len(GENRES))}
    cold |= {f"movie_genres_{i}": 0.0 for i in range(len(GENRES))}
    holdout_out = holdout_out.fillna(cold)
    return train_out.sort_values(KEYS, ignore_index=True), holdout_out.sort_values(KEYS, ignore_index=True)


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
