"""The online store benchmark's plain baseline does the store's work: its increments add up to the
offline aggregates, and its read assembles the same arrays as ``read_pairs`` (no server here)."""

from collections import defaultdict

import numpy as np
import pytest

from bench import bench_online
from infra.online_store import keys
from infra.online_store.store import model_inputs
from railyard import feature_spec as spec
from railyard.features import GENRES, aggregate_totals


def apply_commands(commands) -> dict[str, dict[str, float]]:
    """HINCRBY / HINCRBYFLOAT / HSET on dicts of hashes: what the server would hold."""
    hashes: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for command, key, *pairs in commands:
        assert command in ("HINCRBY", "HINCRBYFLOAT", "HSET")
        for field, value in zip(pairs[::2], pairs[1::2]):
            hashes[key][field] = float(value) + (hashes[key][field] if command != "HSET" else 0)
    return hashes


def test_the_plain_commands_hold_the_offline_aggregates():
    rng = np.random.default_rng(0)
    movies = bench_online.catalogue(60, rng)
    ratings = bench_online.draw_ratings(3_000, rng, bench_online.START_TS)
    ratings = ratings.with_columns(ratings["userId"] % 40 + 1, ratings["movieId"] % 60 + 1)
    hashes = apply_commands(
        bench_online.plain_commands("ns", bench_online.as_events(ratings), bench_online.genre_indexes(movies))
    )
    users, rated = aggregate_totals(ratings, movies)
    assert users.height == 40 and rated.height == 60
    for entity, totals, key_of in (("user", users, keys.user_key), ("movie", rated, keys.movie_key)):
        for entity_id, *values in totals.iter_rows():
            fields = hashes[key_of("ns", entity_id)]
            for aggregate, value in zip(spec.aggregates(entity), values):
                got = [fields.get(field, 0) for field in aggregate.fields]
                assert got == pytest.approx(value if aggregate.per_genre else [value], abs=1e-9), aggregate.name


def test_hash_fields_as_read_become_the_model_input_layout():
    """The assembly read_pairs and the plain read share: missing fields 0, a time as its day and
    second, genres one-hot."""
    user_values = [[b"4", b"13.5", b"3", *[None] * (2 * len(GENRES)), b"4.5", b"1767225601"]]
    movie_values = [[b"2", b"7", b"1"], [None, None, None]]
    genres = [b"0,7", None]
    users, movies = model_inputs(user_values, movie_values, genres, np.array([0, 0, 0]), np.array([1, 0, 1]))
    assert users.shape == (3, spec.width("user")) and movies.shape == (3, 3 + len(GENRES))
    assert users[:, :4].tolist() == [[4, 13.5, 3, 0]] * 3
    assert users[0, spec.layout("user")["user_last_rating"]].tolist() == [4.5]
    assert users[0, spec.layout("user")["user_last_ts"]].tolist() == [20454, 1]
    assert movies[1, :3].tolist() == [2, 7, 1] and np.flatnonzero(movies[1, 3:]).tolist() == [0, 7]
    assert not movies[0].any() and not movies[2].any()  # unknown movie, no genres: zeros


def test_sides_alternate_and_targets_are_judged():
    order = []
    bench_online.alternate({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, rounds=3)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert bench_online.best_round([{"p99": 3.0}, {"p99": 2.0}]) == {"p99": 2.0}
    result = {
        "ingest": {"railyard_consume_events_per_s": 25_000, "consume_vs_plain": 0.79},
        "freshness_ms": {"railyard": {"p99": 100.0}},
        "feature_read_ms": {"railyard": {"p99": 4.9}},
    }
    met = {name: check["met"] for name, check in bench_online.targets(result).items()}
    assert met == {
        "ingest_events_per_s": True,
        "ingest_vs_plain": False,
        "freshness_p99_ms": False,
        "feature_read_p99_ms": True,
    }
