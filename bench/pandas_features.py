"""The benchmark's baseline: the same point-in-time aggregates, written the usual pandas way.

groupby + cumsum (sums) or groupby + last + shift (latest values) + merge, as a data scientist
would write it (no per-row Python loops), for every aggregate declared in
``railyard.feature_spec``: the speed-up of railyard.features over this is only meaningful
because `compare` checks that both produce the same values, row for row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl

from railyard import feature_spec as spec
from railyard.feature_folder import FeatureSet
from railyard.feature_spec import GENRES, POSITIVE_RATING
from railyard.features import split_cutoff

GENRE = [f"g{i}" for i in range(len(GENRES))]
KEYS = ["timestamp", "userId", "movieId"]


def _genre_table(movies: pd.DataFrame | None) -> pd.DataFrame:
    if movies is None:
        return pd.DataFrame(columns=["movieId", *GENRE]).astype({"movieId": "int64", **dict.fromkeys(GENRE, "float32")})
    names = movies["genres"].fillna("").str.split("|")
    table = pd.DataFrame({g: names.apply(lambda genres, name=name: name in genres) for g, name in zip(GENRE, GENRES)})
    table = table.astype("float32")
    table.insert(0, "movieId", movies["movieId"].to_numpy())
    return table.drop_duplicates("movieId")


def _columns(aggregate: spec.Aggregate) -> list[str]:
    """An aggregate's columns here: a genre vector as ``<name>_<i>``."""
    return [f"{aggregate.name}_{i}" for i in range(len(GENRES))] if aggregate.per_genre else [aggregate.name]


def _contributions(rows: pd.DataFrame, aggregates: tuple[spec.Aggregate, ...]) -> pd.DataFrame:
    """What each event adds to (or, latest, sets) each aggregate: the product of its factors."""
    out = {}
    for aggregate in aggregates:
        value = np.ones(len(rows))
        for factor in aggregate.factors:
            if factor in ("rating", "label", "timestamp"):
                value = value * rows[factor].to_numpy()
        genres = rows[GENRE].to_numpy().T if aggregate.per_genre else [1.0]
        out |= {column: flags * value for column, flags in zip(_columns(aggregate), genres)}
    return pd.DataFrame(out, index=rows.index)


def _history(rows: pd.DataFrame, key: str, entity: str) -> pd.DataFrame:
    """Per (id, second): the entity's aggregates over the id's strictly earlier seconds: sums as
    the running sum minus the second's own, latest values as the previous second's last event
    (``rows`` sorted by time, user and movie: an id's last event of a second is its greatest
    other id)."""
    aggregates = spec.aggregates(entity)
    values = pd.concat([rows[[key, "timestamp"]], _contributions(rows, aggregates)], axis=1)
    parts = []
    summed = [column for aggregate in aggregates if aggregate.kind == "sum" for column in _columns(aggregate)]
    if summed:
        per_second = values.groupby([key, "timestamp"])[summed].sum()
        parts.append((per_second.groupby(level=key).cumsum() - per_second).astype("float32"))
    for aggregate in (aggregate for aggregate in aggregates if aggregate.kind == "latest"):
        last = values.groupby([key, "timestamp"])[_columns(aggregate)].last()
        before = last.groupby(level=key).shift(1).fillna(0)
        parts.append(before.astype("int64" if aggregate.is_time else "float32"))
    return pd.concat(parts, axis=1).reset_index()


def build_features_pandas(
    ratings: pd.DataFrame, movies: pd.DataFrame | None, holdout_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout) with railyard.features' columns; array features as ``<name>_<i>`` columns."""
    cutoff = split_cutoff(pl.Series(ratings["timestamp"].to_numpy()), holdout_fraction)
    genres = _genre_table(movies)
    rows = ratings[["userId", "movieId", "timestamp", "rating"]].copy()
    rows["label"] = (rows["rating"] >= POSITIVE_RATING).astype("float32")
    rows = rows.merge(genres, on="movieId", how="left").sort_values(KEYS, ignore_index=True)
    rows[GENRE] = rows[GENRE].fillna(0.0).astype("float32")
    out = (
        rows[["userId", "movieId", "timestamp", "rating", "label", *GENRE]]
        .merge(_history(rows, "userId", "user"), on=["userId", "timestamp"])
        .merge(_history(rows, "movieId", "movie"), on=["movieId", "timestamp"])
        .rename(columns=dict(zip(GENRE, (f"movie_genres_{i}" for i in range(len(GENRES))))))
    )  # inner merges keep the left rows' order: sorted
    training = out["timestamp"] < cutoff
    return out[training].reset_index(drop=True), out[~training].reset_index(drop=True)


def compare(ours: FeatureSet, theirs: tuple[pd.DataFrame, pd.DataFrame], rtol: float = 1e-5) -> None:
    """AssertionError naming the side and column unless both implementations agree row for row
    (times exactly)."""
    times = {aggregate.name for entity in spec.ENTITIES for aggregate in spec.aggregates(entity) if aggregate.is_time}
    for side, frame, other in (("train", ours.train, theirs[0]), ("holdout", ours.holdout, theirs[1])):
        frame = frame.sort(KEYS)
        if len(frame) != len(other):
            raise AssertionError(f"{side}: {len(frame)} rows vs. {len(other)} in pandas")
        for key in KEYS:
            np.testing.assert_array_equal(frame[key].to_numpy(), other[key].to_numpy(), err_msg=f"{side}.{key}")
        for name in ("label", *spec.names("user"), *spec.names("movie")):
            column = frame[name]
            if isinstance(column.dtype, pl.Array):
                mine = np.stack(column.to_numpy())
                theirs_ = other[[f"{name}_{i}" for i in range(len(GENRES))]].to_numpy()
            else:
                mine, theirs_ = column.to_numpy(), other[name].to_numpy()
            if name in times:
                np.testing.assert_array_equal(mine, theirs_, err_msg=f"{side}.{name}")
            else:
                np.testing.assert_allclose(mine, theirs_, rtol=rtol, atol=1e-6, err_msg=f"{side}.{name}")
