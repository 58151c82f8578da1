"""The online feature store: ingest throughput, freshness and one request's feature read, each
side by side with a plain redis-py baseline doing the same work, in one run.

    uv run python -m bench.bench_online [--events 200000] [--rounds 3]

It starts its own embedded Valkey (``valkey_process.ensure_valkey`` in a temporary RAILYARD_HOME on a
free port, stopped at the end), draws a catalogue with genres and rating events with NumPy,
and measures:

1. Ingest: Railyard publishes ``--events`` events to the stream (``stream.publish``), then the
   real consumer drains them (``Ingester``, ``online`` group: read, parse, the exactly-once Lua
   apply, acknowledge) in batches of 1,000; publish and consume are timed apart. The plain side
   sends the same aggregate updates with redis-py, no stream and no exactly-once markers:
   pipelined per event, for every declared aggregate (``feature_spec``), an HINCRBY/HINCRBYFLOAT
   of each sum (per genre from a catalogue held in memory) and one HSET of the latest values
   (the events come in time order, so it need not compare), one round trip per 1,000 events. Both sides start each
   round from the same namespace, written by the same commands, and end equal (checked).
2. Freshness: an ingester in a subprocess (the shape ``railyard ingest`` runs in) consumes the
   stream; single events are published at a modest rate, and the clock runs from just before
   the XADD until ``OnlineStore.read_pairs`` (the read ``infra.scoring.score_online`` makes before
   it calls TF Serving) shows the user's count one higher, polled back to back. The plain side
   writes the same event with HINCRBY and reads it back with HMGET: the floor.
3. Feature read: ``read_pairs`` for 1 user and 100 movies (one Lua round trip) against a redis-py
   pipeline of HMGETs for the same keys (the user, the 100 movies, their genres) and the same
   NumPy assembly; both return the same arrays (checked).

The sides alternate (A B, B A, ...) and each keeps its best round: the highest throughput, the
lowest p99. Results go to stdout as a table and to bench/results/online.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import redis

from infra.online_store import keys, valkey_process
from infra.online_store.consumer import POLL_S
from infra.online_store.store import OnlineStore, model_inputs, namespace_commands
from infra.online_store.stream import Ingester, publish
from railyard import feature_spec as spec
from railyard.events import RatingEvent
from railyard.features import POSITIVE_RATING, movie_genres
from railyard.loaders import MOVIELENS_GENRES, NO_GENRES, RATINGS_SCHEMA
from railyard.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
USERS, MOVIES = 20_000, 10_000
BOOTSTRAP_RATINGS = 20_000  # the batch data the namespace is rebuilt from each round
BATCH = 1_000  # events per round trip on both sides (the Ingester's default batch)
START_TS = 1_767_225_600  # 2026-01-01T00:00:00Z
PLAIN_NAMESPACE = "bench-plain"
# Pause after an event became visible, before the next one, drawn uniformly: gaps spread over two
# of the idle ingester's blocking reads (POLL_S each), so an event lands anywhere in that cycle,
# as independent producers' events do. The floor has no cycle to land in: short gaps.
CYCLE_GAP_S = (0.0, 2 * POLL_S)
SHORT_GAP_S = (0.005, 0.025)
VISIBLE_TIMEOUT_S = 10.0
URL_ENV = "RAILYARD_BENCH_ONLINE_URL"  # the worker's store URL (it carries the password: not argv)
TARGETS = {
    "ingest_events_per_s": 20_000,  # at least
    "ingest_vs_plain": 0.8,  # at least
    "freshness_p99_ms": 100.0,  # below
    "feature_read_p99_ms": 5.0,  # below
}


# --- data ---------------------------------------------------------------------------------------


def catalogue(count: int, rng: np.random.Generator) -> pl.DataFrame:
    """Movies 1..count with one to three MovieLens genres each; every seventh has none listed."""
    genres = [
        NO_GENRES if movie % 7 == 0 else "|".join(rng.choice(MOVIELENS_GENRES, rng.integers(1, 4), replace=False))
        for movie in range(1, count + 1)
    ]
    return pl.DataFrame(
        {"movieId": range(1, count + 1), "title": [f"Movie {i}" for i in range(1, count + 1)]}
    ).with_columns(genres=pl.Series(genres))


def draw_ratings(count: int, rng: np.random.Generator, start_ts: int) -> pl.DataFrame:
    """``count`` half-step ratings by uniform users of uniform movies, one second apart (so
    every event is distinct)."""
    return pl.DataFrame(
        {
            "userId": rng.integers(1, USERS + 1, count),
            "movieId": rng.integers(1, MOVIES + 1, count),
            "rating": rng.integers(1, 11, count) / 2,
            "timestamp": start_ts + np.arange(count),
        },
        schema=RATINGS_SCHEMA,
    )


def as_events(ratings: pl.DataFrame) -> list[RatingEvent]:
    return [RatingEvent(*row) for row in ratings.select("userId", "movieId", "rating", "timestamp").iter_rows()]


def genre_indexes(movies: pl.DataFrame) -> dict[int, tuple[int, ...]]:
    """movieId -> its genre indexes (GENRES order), what the store's genres hash holds."""
    return {
        movie: tuple(i for i, flag in enumerate(flags) if flag)
        for movie, *flags in movie_genres(movies).iter_rows()
        if any(flags)
    }


# --- the plain redis-py side ---------------------------------------------------------------------


def plain_commands(
    namespace: str, events: Sequence[RatingEvent], genres_of: dict[int, tuple[int, ...]]
) -> Iterator[tuple]:
    """The aggregate updates of ``events`` as plain hash commands (what the apply script does
    per event, without its exactly-once marker and meta counters): every declared sum as an
    increment, the latest values set outright (the bench's events come in time order, so the
    last one set is the latest; the script compares with the latest it holds instead)."""
    for event in events:
        label = int(event.rating >= POSITIVE_RATING)
        factors = {"one": 1, "rating": event.rating, "label": label, "timestamp": event.timestamp}
        sides = (
            ("user", keys.user_key(namespace, event.user_id), event.movie_id),
            ("movie", keys.movie_key(namespace, event.movie_id), event.user_id),
        )
        for entity, key, other in sides:
            latest = [keys.LATEST_TS, event.timestamp, keys.LATEST_ID, other]
            for aggregate in spec.aggregates(entity):
                value = math.prod(factors[factor] for factor in aggregate.factors if factor != "genres")
                genres = genres_of.get(event.movie_id, ())
                fields = (
                    [f"{aggregate.field}.{genre}" for genre in genres] if aggregate.per_genre else [aggregate.field]
                )
                if aggregate.kind == "latest":
                    latest += [item for field in fields for item in (field, value)]
                elif value:
                    command = "HINCRBYFLOAT" if aggregate.is_float else "HINCRBY"
                    yield from ((command, key, field, repr(value) if aggregate.is_float else value) for field in fields)
            if len(latest) > 4:
                yield ("HSET", key, *latest)


def plain_ingest(
    client: redis.Redis, namespace: str, events: Sequence[RatingEvent], genres_of: dict[int, tuple[int, ...]]
) -> None:
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(events), BATCH):
        for command in plain_commands(namespace, events[start : start + BATCH], genres_of):
            pipe.execute_command(*command)
        pipe.execute()


def plain_read(
    client: redis.Redis, namespace: str, user_ids: Sequence[int], movie_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``read_pairs``' arrays from one redis-py pipeline of HMGETs of a known namespace."""
    users, user_rows = np.unique(np.asarray(user_ids, np.int64), return_inverse=True)
    movies, movie_rows = np.unique(np.asarray(movie_ids, np.int64), return_inverse=True)
    pipe = client.pipeline(transaction=False)
    for user in users.tolist():
        pipe.hmget(keys.user_key(namespace, user), keys.fields("user"))
    for movie in movies.tolist():
        pipe.hmget(keys.movie_key(namespace, movie), keys.fields("movie"))
    pipe.hmget(keys.genres_key(namespace), movies.tolist())
    replies = pipe.execute()
    return model_inputs(replies[: len(users)], replies[len(users) : -1], replies[-1], user_rows, movie_rows)


def write_namespace(client: redis.Redis, namespace: str, ratings: pl.DataFrame, movies: pl.DataFrame) -> None:
    """The plain side's starting state: the very commands a rebuild writes, in a namespace of its own."""
    pipe = client.pipeline(transaction=False)
    for count, command in enumerate(namespace_commands(namespace, ratings, movies), start=1):
        pipe.execute_command(*command)
        if count % 1_000 == 0:
            pipe.execute()
    pipe.execute()


# --- figures -------------------------------------------------------------------------------------


def percentiles_ms(seconds: Sequence[float]) -> dict:
    values = np.asarray(seconds, np.float64) * 1000
    p50, p99 = np.percentile(values, [50, 99])
    return {
        "p50": round(float(p50), 3),
        "p99": round(float(p99), 3),
        "max": round(float(values.max()), 3),
        "n": len(values),
    }


def best_round(rounds: list[dict]) -> dict:
    """The round with the lowest p99."""
    return min(rounds, key=lambda figures: figures["p99"])


def alternate(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, list]:
    """Each side's results over ``rounds`` runs each, in the order A B, B A, A B, ..."""
    names = list(sides)
    results: dict[str, list] = {name: [] for name in names}
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            results[name].append(sides[name]())
    return results


def targets(result: dict) -> dict:
    ingest, fresh, read = result["ingest"], result["freshness_ms"], result["feature_read_ms"]
    checks = {
        "ingest_events_per_s": (ingest["railyard_consume_events_per_s"], ">="),
        "ingest_vs_plain": (ingest["consume_vs_plain"], ">="),
        "freshness_p99_ms": (fresh["railyard"]["p99"], "<"),
        "feature_read_p99_ms": (read["railyard"]["p99"], "<"),
    }
    return {
        name: {
            "target": f"{op} {TARGETS[name]:,}",
            "measured": value,
            "met": bool(value >= TARGETS[name] if op == ">=" else value < TARGETS[name]),
        }
        for name, (value, op) in checks.items()
    }


# --- the server ----------------------------------------------------------------------------------


@contextmanager
def embedded_valkey() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="railyard-bench-online-") as home:
        settings = Settings(home=Path(home), local_online_store_port=0)
        state = valkey_process.ensure_valkey(settings)
        try:
            yield valkey_process.url(valkey_process.server_dir(settings), state)
        finally:
            valkey_process.stop(settings)


def settle(client: redis.Redis) -> None:
    """No background work left in the server, and its append-only file freshly rewritten, so each
    side starts from the same state (the server runs as shipped: appendfsync everysec, automatic
    rewrites, which either side's writes may trigger)."""

    def busy() -> bool:
        info = client.info("persistence")
        memory = client.info("memory")
        return bool(
            info.get("aof_rewrite_in_progress")
            or info.get("aof_rewrite_scheduled")
            or info.get("rdb_bgsave_in_progress")
            or memory.get("lazyfree_pending_objects")
        )

    def wait() -> None:
        while busy():
            time.sleep(0.05)

    wait()
    client.bgrewriteaof()
    time.sleep(0.05)
    wait()


def aof_rewrites(client: redis.Redis) -> int:
    return int(client.info("persistence").get("aof_rewrites", 0))


# --- 1. ingest -----------------------------------------------------------------------------------


def bench_ingest(store: OnlineStore, data: dict, events: list[RatingEvent], rounds: int, scratch: Path) -> dict:
    client = store.client
    runs: dict[str, list] = {"railyard": [], "plain": []}

    def reset() -> None:
        client.delete(keys.STREAM, keys.DEAD_LETTERS, keys.DEAD_LETTER_INDEX)
        store.rebuild(data["bootstrap"], data["movies"])  # drops every other namespace, the plain one too
        write_namespace(client, PLAIN_NAMESPACE, data["bootstrap"], data["movies"])

    def railyard_side() -> dict:
        settle(client)
        rewrites = aof_rewrites(client)
        start = time.perf_counter()
        published = publish(store, events)
        published_at = time.perf_counter()
        ingester = Ingester(
            store, scratch / "no-batch-data", groups=[keys.ONLINE_GROUP], consumer="bench", batch_size=BATCH
        )
        report = ingester.run(until_idle=True)
        done = time.perf_counter()
        if published != len(events) or report.applied != len(events):
            raise RuntimeError(f"published {published}, applied {report.applied} of {len(events)} events")
        run = {
            "publish_s": round(published_at - start, 3),
            "consume_s": round(done - published_at, 3),
            "aof_rewrites": aof_rewrites(client) - rewrites,
        }
        runs["railyard"].append(run)
        return run

    def plain_side() -> dict:
        settle(client)
        rewrites = aof_rewrites(client)
        start = time.perf_counter()
        plain_ingest(client, PLAIN_NAMESPACE, events, data["genres_of"])
        run = {"seconds": round(time.perf_counter() - start, 3), "aof_rewrites": aof_rewrites(client) - rewrites}
        runs["plain"].append(run)
        return run

    for round_ in range(rounds):
        reset()
        for side in (railyard_side, plain_side) if round_ % 2 == 0 else (plain_side, railyard_side):
            side()
        check_equal_namespaces(store)

    n = len(events)
    consume = n / min(run["consume_s"] for run in runs["railyard"])
    publish_rate = n / min(run["publish_s"] for run in runs["railyard"])
    both = n / min(run["publish_s"] + run["consume_s"] for run in runs["railyard"])
    plain = n / min(run["seconds"] for run in runs["plain"])
    return {
        "events": n,
        "batch": BATCH,
        "railyard_consume_events_per_s": round(consume),
        "railyard_publish_events_per_s": round(publish_rate),
        "railyard_publish_and_consume_events_per_s": round(both),
        "plain_events_per_s": round(plain),
        "consume_vs_plain": round(consume / plain, 3),
        "publish_and_consume_vs_plain": round(both / plain, 3),
        "runs": runs,
    }


def check_equal_namespaces(store: OnlineStore) -> None:
    """Both sides' namespaces hold the same aggregates after a round (every user, every movie)."""
    namespace = store.namespace()
    for chunk in np.array_split(np.arange(1, USERS + 1), 20):
        _assert_same(*(plain_read(store.client, ns, chunk, [1]) for ns in (namespace, PLAIN_NAMESPACE)))
    for chunk in np.array_split(np.arange(1, MOVIES + 1), 10):
        _assert_same(*(plain_read(store.client, ns, [1], chunk) for ns in (namespace, PLAIN_NAMESPACE)))


def _assert_same(left: tuple[np.ndarray, np.ndarray], right: tuple[np.ndarray, np.ndarray]) -> None:
    for a, b in zip(left, right):
        counts = np.ones(a.shape[1], bool)
        counts[1] = False  # column 1 is the rating sum in both layouts
        if not (np.array_equal(a[:, counts], b[:, counts]) and np.allclose(a[:, 1], b[:, 1], rtol=0, atol=1e-9)):
            raise RuntimeError("the two sides' aggregates differ: the comparison would not be of equal work")


# --- 2. freshness --------------------------------------------------------------------------------


def ingest_worker() -> None:
    """The ingester process of the freshness runs (until SIGTERM)."""
    client = redis.Redis.from_url(os.environ[URL_ENV], socket_timeout=5.0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ingester = Ingester(
        OnlineStore(client), Path(tempfile.gettempdir()) / "no-batch-data", groups=[keys.ONLINE_GROUP], stop=stop
    )
    ingester.run()


@contextmanager
def ingester_process(url: str) -> Iterator[None]:
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_online", "--ingest-worker"],
        cwd=REPO_ROOT,
        env=os.environ | {URL_ENV: url},
    )
    try:
        yield
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


class Freshness:
    """Single events, one at a time, each timed from its write to its visibility."""

    def __init__(self, store: OnlineStore, seed: int, start_ts: int):
        self.store, self.rng, self.next_ts = store, np.random.default_rng(seed), start_ts

    def _event(self) -> RatingEvent:
        self.next_ts += 1
        return RatingEvent(
            int(self.rng.integers(1, USERS + 1)),
            int(self.rng.integers(1, MOVIES + 1)),
            float(self.rng.integers(1, 11) / 2),
            self.next_ts,
        )

    def _pause(self, gap_s: tuple[float, float]) -> None:
        time.sleep(self.rng.uniform(*gap_s))

    def railyard(self, samples: int, gap_s: tuple[float, float], timeout_s: float = VISIBLE_TIMEOUT_S) -> list[float]:
        """XADD, then read_pairs back to back until the user's count moved."""
        seconds = []
        for _ in range(samples):
            event = self._event()
            before = self.store.read_pairs([event.user_id], [event.movie_id])[0][0, 0]
            start = time.perf_counter()
            publish(self.store, [event])
            while self.store.read_pairs([event.user_id], [event.movie_id])[0][0, 0] == before:
                if time.perf_counter() - start > timeout_s:
                    raise RuntimeError(f"an event was not visible after {timeout_s:g} s: is the ingester running?")
            seconds.append(time.perf_counter() - start)
            self._pause(gap_s)
        return seconds

    def plain(self, samples: int, genres_of: dict[int, tuple[int, ...]]) -> list[float]:
        """The same event's increments in one pipeline, then the same features read back (the floor)."""
        client, seconds = self.store.client, []
        for _ in range(samples):
            event = self._event()
            before = plain_read(client, PLAIN_NAMESPACE, [event.user_id], [event.movie_id])[0][0, 0]
            start = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for command in plain_commands(PLAIN_NAMESPACE, [event], genres_of):
                pipe.execute_command(*command)
            pipe.execute()
            if plain_read(client, PLAIN_NAMESPACE, [event.user_id], [event.movie_id])[0][0, 0] != before + 1:
                raise RuntimeError("the plain write was not visible to the read after it")
            seconds.append(time.perf_counter() - start)
            self._pause(SHORT_GAP_S)
        return seconds

    def wait_for_ingester(self) -> None:
        """One event through, untimed: the worker is up (it imports for a few seconds) and warm."""
        self.railyard(1, SHORT_GAP_S, timeout_s=120.0)


def bench_freshness(store: OnlineStore, url: str, data: dict, rounds: int, samples: int, start_ts: int) -> dict:
    freshness = Freshness(store, seed=3, start_ts=start_ts)
    with ingester_process(url):
        freshness.wait_for_ingester()
        runs = alternate(
            {
                "railyard": lambda: percentiles_ms(freshness.railyard(samples, CYCLE_GAP_S)),
                "plain": lambda: percentiles_ms(freshness.plain(samples, data["genres_of"])),
            },
            rounds,
        )
    return {name: best_round(side_runs) for name, side_runs in runs.items()} | {
        "samples_per_round": samples,
        "ingester_idle_block_s": POLL_S,
        "runs": runs,
    }


# --- 3. feature read -----------------------------------------------------------------------------


def bench_feature_read(store: OnlineStore, rounds: int, requests: int) -> dict:
    rng = np.random.default_rng(5)
    namespace = store.namespace()  # the plain side knows its keys; read_pairs looks the pointer up
    asks = [
        (int(rng.integers(1, USERS + 1)), rng.choice(np.arange(1, MOVIES + 1), 100, replace=False).tolist())
        for _ in range(requests)
    ]
    for user, movies in asks[:20]:
        _assert_same(store.read_pairs([user] * 100, movies), plain_read(store.client, namespace, [user] * 100, movies))

    def timed(read: Callable[[int, list[int]], object]) -> dict:
        seconds = []
        for user, movies in asks:
            start = time.perf_counter()
            read(user, movies)
            seconds.append(time.perf_counter() - start)
        return percentiles_ms(seconds)

    runs = alternate(
        {
            "railyard": lambda: timed(lambda user, movies: store.read_pairs([user] * 100, movies)),
            "plain": lambda: timed(lambda user, movies: plain_read(store.client, namespace, [user] * 100, movies)),
        },
        rounds,
    )
    return {name: best_round(side_runs) for name, side_runs in runs.items()} | {
        "requests_per_round": requests,
        "pairs_per_request": 100,
        "runs": runs,
    }


# --- the run -------------------------------------------------------------------------------------


def bench(n_events: int, rounds: int, freshness_samples: int, read_requests: int) -> dict:
    rng = np.random.default_rng(7)
    movies = catalogue(MOVIES, rng)
    data = {
        "movies": movies,
        "genres_of": genre_indexes(movies),
        "bootstrap": draw_ratings(BOOTSTRAP_RATINGS, rng, START_TS),
    }
    events = as_events(draw_ratings(n_events, rng, START_TS + BOOTSTRAP_RATINGS))
    wall = time.perf_counter()
    with embedded_valkey() as url, tempfile.TemporaryDirectory(prefix="railyard-bench-online-") as scratch:
        client = redis.Redis.from_url(url, socket_timeout=30.0)
        store = OnlineStore(client)
        version = client.info("server").get("valkey_version") or client.info("server").get("redis_version")
        ingest = bench_ingest(store, data, events, rounds, Path(scratch))
        # Dated after the ingest's events (never before the present: the ingester refuses those).
        fresh = bench_freshness(store, url, data, rounds, freshness_samples, events[-1].timestamp)
        read = bench_feature_read(store, rounds, read_requests)
        client.close()
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"redis-py {redis.__version__}, Valkey {version}",
        "users": USERS,
        "movies": MOVIES,
        "bootstrap_ratings": BOOTSTRAP_RATINGS,
        "rounds": rounds,
        "seconds": round(time.perf_counter() - wall, 1),
        "ingest": ingest,
        "freshness_ms": fresh,
        "feature_read_ms": read,
    }
    result["targets"] = targets(result)
    return result


def format_table(result: dict) -> str:
    ingest, fresh, read, met = result["ingest"], result["freshness_ms"], result["feature_read_ms"], result["targets"]

    def verdict(name: str) -> str:
        return f"{met[name]['target']}: {'met' if met[name]['met'] else 'NOT met'}"

    def row(label: str, ours, plain, ratio: str = "", target: str = "") -> str:
        return f"{label:<36}{ours:>12}{plain:>12}{ratio:>9}   {target}"

    rows = [
        f"online store: {ingest['events']:,} events, {result['users']:,} users, {result['movies']:,} movies, "
        f"best of {result['rounds']} rounds per side; {result['machine']}",
        row("", "railyard", "plain", "ratio", "target"),
        row(
            "ingest, consume (events/s)",
            f"{ingest['railyard_consume_events_per_s']:,}",
            f"{ingest['plain_events_per_s']:,}",
            f"{ingest['consume_vs_plain']:.2f}",
            f"{verdict('ingest_events_per_s')}; ratio {verdict('ingest_vs_plain')}",
        ),
        row("ingest, publish (events/s)", f"{ingest['railyard_publish_events_per_s']:,}", "-"),
        row(
            "ingest, publish + consume (events/s)",
            f"{ingest['railyard_publish_and_consume_events_per_s']:,}",
            f"{ingest['plain_events_per_s']:,}",
            f"{ingest['publish_and_consume_vs_plain']:.2f}",
        ),
        row("freshness p50 (ms)", f"{fresh['railyard']['p50']:.2f}", f"{fresh['plain']['p50']:.2f}"),
        row(
            "freshness p99 (ms)",
            f"{fresh['railyard']['p99']:.2f}",
            f"{fresh['plain']['p99']:.2f}",
            "",
            verdict("freshness_p99_ms"),
        ),
        row("feature read p50 (ms)", f"{read['railyard']['p50']:.3f}", f"{read['plain']['p50']:.3f}"),
        row(
            "feature read p99 (ms)",
            f"{read['railyard']['p99']:.3f}",
            f"{read['plain']['p99']:.3f}",
            "",
            verdict("feature_read_p99_ms"),
        ),
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per ingest run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per side of each measurement")
    parser.add_argument("--freshness-samples", type=int, default=150, help="single events per side and round")
    parser.add_argument("--read-requests", type=int, default=1_000, help="requests per side and round")
    parser.add_argument("--ingest-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest_worker:
        ingest_worker()
        return
    result = bench(args.events, args.rounds, args.freshness_samples, args.read_requests)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "online.json").write_text(json.dumps(result, indent=1))
    print(format_table(result))


if __name__ == "__main__":
    main()
