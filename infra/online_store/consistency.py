"""Train/serve skew, measured: a sample of the online store against the offline aggregates of
the batch data as of the store's last applied event (``railyard.skew`` does the arithmetic).

The offline side is a sample of per-entity totals. One machine draws it from every rating
(``offline_samples``); a partitioned build draws it on partitions that each hold whole users or
whole movies (``PartitionedOnline``, which can also fill an empty store from them), and the
samples put together are the same sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from infra.online_store import store as S
from infra.online_store.store import OnlineStore
from railyard import feature_spec as spec
from railyard import features as F
from railyard import skew


def check_store(
    store: OnlineStore, ratings: pl.DataFrame, movies: pl.DataFrame | None, sample_size: int, seed: int
) -> tuple[bool, tuple[skew.SkewReport, skew.SkewReport]]:
    """What a retrain does with the online store: build it from the (validated) batch data when
    it holds nothing yet, then measure the skew. Whether it was built, and the two reports."""
    built = store.namespace() is None and store.rebuild(ratings, movies, if_empty=True) is not None
    return built, measure_skew(store, ratings, movies, sample_size, seed)


def measure_skew(
    store: OnlineStore, ratings: pl.DataFrame, movies: pl.DataFrame | None, sample_size: int, seed: int
) -> tuple[skew.SkewReport, skew.SkewReport]:
    """(users, movies): sampled from the entities the batch data holds up to the store's last
    event, read from the store in one round trip, compared with the offline totals."""
    samples = offline_samples(ratings, F.movie_genres(movies), store.state()["last_event_ts"], sample_size, seed)
    return compare_with_store(store, *samples)


def offline_samples(
    ratings: pl.DataFrame, genres: pl.DataFrame, last_event_ts: int | None, size: int, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Samples of the user and the movie totals of the ratings the store has seen."""
    rows = seen_rows(ratings, last_event_ts)
    return user_sample(rows, genres, size, seed), movie_sample(rows, genres, size, seed)


def seen_rows(ratings: pl.DataFrame, last_event_ts: int | None) -> pl.DataFrame:
    """The ratings the store has applied, as far as time tells (those up to its last event)."""
    return ratings.filter(pl.col("timestamp") <= last_event_ts) if last_event_ts is not None else ratings.clear()


def user_sample(rows: pl.DataFrame, genres: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    return _sampled_totals(rows, "userId", F.user_totals, genres, size, seed)


def movie_sample(rows: pl.DataFrame, genres: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    return _sampled_totals(rows, "movieId", F.movie_totals, genres, size, seed)


def _sampled_totals(rows: pl.DataFrame, key: str, totals, genres: pl.DataFrame, size: int, seed: int) -> pl.DataFrame:
    """``skew.sample_totals`` of the entities' totals over ``rows``, computed for the sampled
    entities alone: an entity's totals need only its own rows (at 25M ratings, every user's
    and movie's totals took 8 s of the skew check)."""
    drawn = skew.sample_totals(rows.select(pl.col(key).unique()), key, size, seed).get_column(key)
    return totals(F.labelled(rows.filter(pl.col(key).is_in(drawn.implode()))), genres)


def compare_with_store(
    store: OnlineStore, users: pl.DataFrame, movies: pl.DataFrame
) -> tuple[skew.SkewReport, skew.SkewReport]:
    """The sampled totals against the store's values for the same ids (one round trip)."""
    user_ids, movie_ids = (frame.get_column(key).to_numpy() for frame, key in ((users, "userId"), (movies, "movieId")))
    pairs = max(len(user_ids), len(movie_ids))
    if pairs == 0:
        empty = skew.compare("user", user_ids, np.zeros((0, 0)), np.zeros((0, 0)))
        return empty, skew.compare("movie", movie_ids, np.zeros((0, 0)), np.zeros((0, 0)))
    # read_pairs reads pairs: pad the shorter side with its first id (or 0) and drop the extra rows.
    online_users, online_movies = store.read_pairs(_padded(user_ids, pairs), _padded(movie_ids, pairs))
    # Every declared aggregate is compared; the movie's genres (last) are the catalogue's, not aggregates.
    movie_aggregates = tuple(aggregate.name for aggregate in spec.aggregates("movie"))
    return (
        skew.compare("user", user_ids, online_users[: len(user_ids)], skew.offline_vectors(users, spec.names("user"))),
        skew.compare(
            "movie",
            movie_ids,
            online_movies[: len(movie_ids), : spec.layout("movie")[spec.MOVIE_GENRES].start],
            skew.offline_vectors(movies, movie_aggregates),
        ),
    )


ALL_EVENTS = 2**63 - 1  # "as of" for a store filled from every rating


@dataclass(frozen=True)
class Sampled:
    """One partition's part (or, merged, the whole): the sampled totals, and the distinct events
    and newest time of the ratings it saw (a store filled from them records both)."""

    totals: pl.DataFrame
    events: int = 0
    last_ts: int | None = None


@dataclass(frozen=True)
class PartitionedOnline:
    """The online store's part of a partitioned build (``railyard.partitioned.PerKey``): on each
    user (movie) partition, its sample of the user (movie) totals the store has seen, and, when
    ``namespace`` is set, that partition's share of a store rebuild, written from the worker.

    It travels to the workers with ``store_url``, password included: they must reach the store."""

    genres: pl.DataFrame
    last_event_ts: int | None
    size: int
    seed: int
    store_url: str | None = None
    namespace: str | None = None  # the namespace being rebuilt (``OnlineStore.rebuilding``)

    def planned(self, days) -> PartitionedOnline:
        return self  # the same whatever the days

    def users(self, ratings: pl.DataFrame) -> Sampled:
        self._write(lambda checked: S.user_commands(self.namespace, checked, self.genres), ratings)
        sample = user_sample(seen_rows(ratings, self.last_event_ts), self.genres, self.size, self.seed)
        return Sampled(sample, ratings.height, ratings.get_column("timestamp").max())

    def movies(self, ratings: pl.DataFrame) -> Sampled:
        self._write(lambda checked: S.movie_commands(self.namespace, checked, self.genres), ratings)
        return Sampled(movie_sample(seen_rows(ratings, self.last_event_ts), self.genres, self.size, self.seed))

    def merged(self, users: list[Sampled], movies: list[Sampled]) -> tuple[Sampled, Sampled]:
        """The partitions' samples as one: the sample ``offline_samples`` draws from every rating."""
        newest = [part.last_ts for part in users if part.last_ts is not None]
        return (
            Sampled(
                skew.sample_totals(pl.concat([part.totals for part in users]), "userId", self.size, self.seed),
                sum(part.events for part in users),
                max(newest) if newest else None,
            ),
            Sampled(skew.sample_totals(pl.concat([part.totals for part in movies]), "movieId", self.size, self.seed)),
        )

    def _write(self, commands, ratings: pl.DataFrame) -> None:
        if self.namespace is None:
            return
        store = S.connect_url(self.store_url)
        try:
            store.write(commands(F.labelled(S.checked_batch(ratings))))
        finally:
            store.client.close()


def check_store_partitioned(
    store: OnlineStore, store_url: str, genres: pl.DataFrame, sample_size: int, seed: int, build
) -> tuple[bool, tuple[skew.SkewReport, skew.SkewReport], object]:
    """``check_store`` for a partitioned build: ``build(per_key)`` runs the build with
    ``PartitionedOnline`` as its per-key work and returns its ``railyard.partitioned.Built``. An
    empty store is filled on the partitions as the build passes them (switched to when the build
    succeeds, dropped when it fails); the ratings never pass through this process. Whether it
    was filled, the two reports, and what ``build`` returned."""
    state = store.state()
    empty = state["namespace"] is None
    if not empty:
        built = build(PartitionedOnline(genres, state["last_event_ts"], sample_size, seed))
    else:
        with store.rebuilding() as namespace:
            built = build(PartitionedOnline(genres, ALL_EVENTS, sample_size, seed, store_url, namespace))
            users, _ = built.per_key
            store.write(
                [*S.catalogue_commands(namespace, genres), S.meta_command(namespace, users.events, users.last_ts)]
            )
    users, movies = built.per_key
    return empty, compare_with_store(store, users.totals, movies.totals), built


def _padded(ids: np.ndarray, length: int) -> np.ndarray:
    fill = ids[0] if len(ids) else 0
    return np.concatenate([ids, np.full(length - len(ids), fill, np.int64)]).astype(np.int64)
