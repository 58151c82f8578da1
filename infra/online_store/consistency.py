"""Train/serve skew, measured: a sample of the online store against the offline aggregates of
the batch data as of the store's last applied event (``railyard.skew`` does the arithmetic)."""

from __future__ import annotations

import numpy as np
import polars as pl

from infra.online_store.store import OnlineStore
from railyard import features as F
from railyard import skew


def check_store(
    store: OnlineStore, ratings: pl.DataFrame, movies: pl.DataFrame | None, sample_size: int, seed: int
) -> tuple[bool, tuple[skew.SkewReport, skew.SkewReport]]:
    """What a retrain does with the online store: build it from the (validated) batch data when
    it holds nothing yet, then measure the skew. Whether it was built, and the two reports."""
    empty = store.namespace() is None
    if empty:
        store.rebuild(ratings, movies)
    return empty, measure_skew(store, ratings, movies, sample_size, seed)


def measure_skew(
    store: OnlineStore, ratings: pl.DataFrame, movies: pl.DataFrame | None, sample_size: int, seed: int
) -> tuple[skew.SkewReport, skew.SkewReport]:
    """(users, movies): sampled from the entities the batch data holds up to the store's last
    event, read from the store in one round trip, compared with the offline totals."""
    last_event_ts = store.state()["last_event_ts"]
    seen = ratings.filter(pl.col("timestamp") <= last_event_ts) if last_event_ts is not None else ratings.clear()
    user_totals, movie_totals = F.aggregate_totals(seen, movies)
    user_ids = skew.sample_ids(user_totals, "userId", sample_size, seed)
    movie_ids = skew.sample_ids(movie_totals, "movieId", sample_size, seed)
    pairs = max(len(user_ids), len(movie_ids))
    # read_pairs reads pairs: pad the shorter side with its first id (or 0) and drop the extra rows.
    online_users, online_movies = store.read_pairs(_padded(user_ids, pairs), _padded(movie_ids, pairs))
    totals_width = len(F.MOVIE_FEATURES) - 1  # the movie's genres are the catalogue's, not aggregates
    return (
        skew.compare(
            "user",
            user_ids,
            online_users[: len(user_ids)],
            skew.offline_vectors(user_totals, "userId", user_ids, F.USER_FEATURES),
        ),
        skew.compare(
            "movie",
            movie_ids,
            online_movies[: len(movie_ids), :totals_width],
            skew.offline_vectors(movie_totals, "movieId", movie_ids, F.MOVIE_FEATURES[:totals_width]),
        ),
    )


def _padded(ids: np.ndarray, length: int) -> np.ndarray:
    fill = ids[0] if len(ids) else 0
    return np.concatenate([ids, np.full(length - len(ids), fill, np.int64)]).astype(np.int64)
