"""Streaming inference (``railyard score-stream``): scored requests/s and publish → result latency
at a fixed offered load, beside the direct batched gRPC Predict of the same batches, for a few
micro-batch settings (batch size, flush time).

    uv run python -m bench.bench_streaming [--requests 5000] [--seconds 8]

Setup, untimed, in a temporary RAILYARD_HOME (``bench.bench_ranking``'s): the production model
trained briefly on synthetic data and served by the local TF-Serving stand-in as version 1
`stable`, an embedded Valkey rebuilt from every rating. REQUESTS requests, each one user and
MOVIES_PER_REQUEST movies (the users and movies of the data), are made beforehand.

For each setting (``SETTINGS``: batch size, flush ms), in that order:

1. direct: the same requests cut into batches of the batch size, their fresh features read
   beforehand, one ``predict_grpc_versioned`` per batch back to back: the model call alone,
   requests/s; and again with each batch's ``read_pairs`` in the loop (+reads);
2. the scorer as production runs it, ``python -m cli score-stream`` in a subprocess (ready once
   ``/readyz`` answers), on empty streams;
3. throughput: every request published at once (one pipeline), timed from the publish to the last
   result readable in the results stream: requests/s (the best of ``--rounds``), its ratio to
   direct, and where a batch's time went (the scorer's /metrics: mean batch size, the fresh
   features' read, the Predict call, the results' Lua write, in ms per batch; and the CPU the
   scorer, Valkey and the TF Serving stand-in each used per batch, from /proc);
4. latency at a fixed offered load (``--rate``, default half of the default setting's measured
   maximum): a publisher adds requests every 2 ms at that rate for ``--seconds``; a reader
   blocks on the results stream and notes when each result is readable; publish → readable
   p50/p99 (ms, on one clock: this process's).

Results go to stdout as a table and to bench/results/streaming.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import redis
from prometheus_client.parser import text_string_to_metric_families

from bench.bench_ranking import code_version, embedded_valkey, free_port, local_serving, machine, train_and_export
from infra.online_store import keys
from infra.online_store.store import connect
from infra.scoring import predict_pairs
from infra.streaming.requests import ScoreRequest, request_fields
from infra.streaming.scorer import publish_requests
from infra.tfserving.protocol import STABLE
from railyard.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODEL = "recmodel"
MOVIES_PER_REQUEST = 5
SETTINGS = ((64, 5.0), (1, 0.0), (16, 2.0), (256, 20.0))  # (batch size, flush ms); the first is the default
TARGETS = {"throughput_vs_direct": 0.8, "p99_ms": 100.0}  # at least / below
READY_TIMEOUT_S = 240.0
TICK_S = 0.002  # the publisher's pace


def make_requests(ratings, count: int, seed: int = 5) -> list[ScoreRequest]:
    rng = np.random.default_rng(seed)
    users = ratings.get_column("userId").unique().to_numpy()
    movies = ratings.get_column("movieId").unique().to_numpy()
    return [
        ScoreRequest(
            f"q{i}", int(rng.choice(users)), tuple(int(m) for m in rng.choice(movies, MOVIES_PER_REQUEST, False)), None
        )
        for i in range(count)
    ]


def direct_rates(store, client, requests: list[ScoreRequest], batch_size: int) -> tuple[float, float]:
    """Requests/s of back-to-back Predicts of the requests in batches: with their features read
    beforehand (the model call alone), and with each batch's read in the loop (read + Predict,
    what any scorer that reads fresh features does at least, before writing results)."""
    batches = []
    for start in range(0, len(requests), batch_size):
        chunk = requests[start : start + batch_size]
        users = [request.user_id for request in chunk for _ in request.movie_ids]
        movies = [movie for request in chunk for movie in request.movie_ids]
        batches.append((users, movies, store.read_pairs(users, movies)))
    predict_pairs(client, MODEL, *batches[0], label=STABLE)  # warm
    started = time.perf_counter()
    for users, movies, features in batches:
        predict_pairs(client, MODEL, users, movies, features, label=STABLE)
    alone = time.perf_counter() - started
    started = time.perf_counter()
    for users, movies, _ in batches:
        predict_pairs(client, MODEL, users, movies, store.read_pairs(users, movies), label=STABLE)
    return len(requests) / alone, len(requests) / (time.perf_counter() - started)


@contextmanager
def scorer_process(home: Path, store_url: str, target, batch_size: int, flush_ms: float):
    port = free_port()
    env = os.environ | {
        "RAILYARD_HOME": str(home),
        "RAILYARD_MODEL_NAME": MODEL,
        "RAILYARD_ONLINE_STORE_URL": store_url,
        "RAILYARD_SERVING_GRPC": target.grpc,
        "RAILYARD_SERVING_REST": target.rest,
        "RAILYARD_SCORER_BATCH_SIZE": str(batch_size),
        "RAILYARD_SCORER_FLUSH_MS": str(flush_ms),
        "RAILYARD_SCORER_METRICS_PORT": str(port),
    }
    log_path = home / f"scorer-{batch_size}-{flush_ms:g}.log"
    with open(log_path, "w") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "cli", "score-stream"], env=env, cwd=REPO_ROOT, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"score-stream exited with {child.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"score-stream not ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield port, child.pid
    finally:
        child.terminate()
        child.wait(60)


class Reader(threading.Thread):
    """Notes when each result becomes readable (this process's clock), by request id."""

    def __init__(self, client: redis.Redis):
        super().__init__(daemon=True)
        self.client, self.seen, self.stop = client, {}, threading.Event()

    def run(self) -> None:
        last = "0"
        while not self.stop.is_set():
            reply = self.client.xread({keys.SCORE_RESULTS: last}, count=1_000, block=100)
            now = time.perf_counter()
            for _, entries in reply:
                for entry_id, fields in entries:
                    self.seen.setdefault(fields[b"id"].decode(), now)
                    last = entry_id

    def wait_for(self, requests: list[ScoreRequest], timeout_s: float = 300) -> float:
        """When the last of the requests' results became readable."""
        deadline, ids = time.monotonic() + timeout_s, {request.request_id for request in requests}
        while missing := ids - self.seen.keys():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} of {len(ids)} results missing after {timeout_s:g} s")
            time.sleep(0.005)
        return max(self.seen[request_id] for request_id in ids)


def scorer_sums(port: int) -> dict[str, float]:
    """The scorer's histogram sums and counts (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return sums_of(answer.read().decode())


def sums_of(text: str) -> dict[str, float]:
    """Histogram sums and counts of a metrics text, by sample name and label values (sorted by label name)."""
    return {
        sample.name + "".join(f",{value}" for _, value in sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.endswith(("_sum", "_count"))
    }


def per_batch(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean batch size and mean milliseconds per batch in each step, between two scrapes."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("railyard_scorer_batch_size_count") or 1.0
    steps = {
        "read_pairs_ms": "railyard_scorer_online_store_seconds_sum,read_pairs",
        "predict_ms": "railyard_scorer_predict_seconds_sum,stable,ok,features",  # label, outcome, signature
        "write_results_ms": "railyard_scorer_online_store_seconds_sum,write_results",
    }
    return {"mean_batch": round(delta("railyard_scorer_batch_size_sum") / batches, 1)} | {
        step: round(delta(name) * 1000 / batches, 2) for step, name in steps.items()
    }


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds so far (Linux: /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(client: redis.Redis, requests: list[ScoreRequest]) -> float:
    reader = Reader(client)
    reader.start()
    started = time.perf_counter()
    publish_requests(client, requests)
    finished = reader.wait_for(requests)
    reader.stop.set()
    return len(requests) / (finished - started)


def latency_at(client: redis.Redis, requests: list[ScoreRequest], rate: float, seconds: float) -> dict:
    """Publish at ``rate`` requests/s for ``seconds``; publish → readable percentiles."""
    reader, published = Reader(client), {}
    reader.start()
    count = min(len(requests), int(rate * seconds))
    started, sent = time.perf_counter(), 0
    while sent < count:
        due = min(count, int((time.perf_counter() - started) * rate) + 1)
        if due > sent:
            pipe = client.pipeline(transaction=False)
            for request in requests[sent:due]:
                pipe.xadd(keys.SCORE_REQUESTS, request_fields(request))
            at = time.perf_counter()
            pipe.execute()
            published.update((request.request_id, at) for request in requests[sent:due])
            sent = due
        time.sleep(TICK_S)
    offered = count / (time.perf_counter() - started)
    reader.wait_for(requests[:count])
    reader.stop.set()
    latencies = np.array([reader.seen[rid] - at for rid, at in published.items()]) * 1000
    return {
        "offered_rps": round(offered, 1),
        "requests": count,
        "p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "max_ms": round(float(latencies.max()), 2),
    }


def bench(count: int, seconds: float, offered: float | None, rounds: int) -> dict:
    wall, load_before = time.perf_counter(), os.getloadavg()
    rows = []
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="railyard-bench-streaming-")))
        settings = Settings(home=home, model_name=MODEL, local_online_store_port=0, local_serving_rest_port=0,
                            local_serving_grpc_port=0, epochs=2)  # fmt: skip
        data, export, model_info = train_and_export(settings, home / "work")
        store_url, valkey_pid = stack.enter_context(embedded_valkey(settings))
        store = connect(Settings(home=home, online_store_url=store_url))
        store.rebuild(data.ratings, data.movies)
        target, serving_pid = stack.enter_context(local_serving(settings, export))
        client = stack.enter_context(target.client(timeout_s=30.0, attempts=1))
        requests = make_requests(data.ratings, count)
        for number, (batch_size, flush_ms) in enumerate(SETTINGS):
            direct, with_reads = direct_rates(store, client, requests, batch_size)
            store.client.delete(keys.SCORE_REQUESTS, keys.SCORE_RESULTS)
            with scorer_process(home, store_url, target, batch_size, flush_ms) as (port, scorer_pid):
                pids = {"scorer": scorer_pid, "valkey": valkey_pid, "serving": serving_pid}
                warm = [ScoreRequest(f"w{number}-{r.request_id}", r.user_id, r.movie_ids, None) for r in requests[:200]]
                throughput(store.client, warm)  # untimed: every path warm
                runs = []
                for attempt in range(rounds):  # the best of them: the machine is shared
                    store.client.delete(keys.SCORE_RESULTS)
                    before, cpu_before = scorer_sums(port), {name: cpu_seconds(pid) for name, pid in pids.items()}
                    tagged = [
                        ScoreRequest(f"t{number}.{attempt}-{r.request_id}", r.user_id, r.movie_ids, None)
                        for r in requests
                    ]
                    rate = throughput(store.client, tagged)
                    steps = per_batch(before, scorer_sums(port))
                    batches = len(tagged) / steps["mean_batch"]
                    steps |= {
                        f"cpu_{name}_ms": round((cpu_seconds(pid) - cpu_before[name]) * 1000 / batches, 2)
                        for name, pid in pids.items()
                    }
                    runs.append((rate, steps))
                scored, steps = max(runs, key=lambda run: run[0])
                store.client.delete(keys.SCORE_RESULTS)
                offered = offered or scored / 2  # half the default setting's maximum, for every row
                paced = [ScoreRequest(f"l{number}-{r.request_id}", r.user_id, r.movie_ids, None) for r in requests]
                latency = latency_at(store.client, paced, offered, seconds)
            rows.append({
                "batch_size": batch_size, "flush_ms": flush_ms, "direct_rps": round(direct, 1),
                "direct_with_reads_rps": round(with_reads, 1),
                "scorer_rps": round(scored, 1), "vs_direct": round(scored / direct, 2), **steps, **latency,
            })  # fmt: skip
        store.client.close()
    default = rows[0]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "code": code_version(),
        "load_average_1_5_15": {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in os.getloadavg()]},
        "data": model_info,
        "requests": count,
        "movies_per_request": MOVIES_PER_REQUEST,
        "seconds": round(time.perf_counter() - wall, 1),
        "rows": rows,
        "targets": {
            "throughput_vs_direct": {"target": f">= {TARGETS['throughput_vs_direct']}", "measured": default["vs_direct"],
                                     "met": default["vs_direct"] >= TARGETS["throughput_vs_direct"]},
            "p99_ms_at_half_max": {"target": f"< {TARGETS['p99_ms']:g}", "measured": default["p99_ms"],
                                   "met": default["p99_ms"] < TARGETS["p99_ms"]},
        },
    }  # fmt: skip


def format_table(result: dict) -> str:
    lines = [
        f"streaming scorer, {result['requests']:,} requests of {result['movies_per_request']} movies; {result['machine']}",
        f"{'batch':>6} {'flush ms':>9} {'direct rps':>11} {'+reads rps':>11} {'scorer rps':>11} {'vs direct':>10} "
        f"{'offered rps':>12} {'p50 ms':>8} {'p99 ms':>8} | per batch: {'size':>5} {'features':>9} {'predict':>8} {'write':>6}"
        f" | CPU ms per batch: {'scorer':>6} {'valkey':>6} {'serving':>7}",
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['batch_size']:>6} {row['flush_ms']:>9g} {row['direct_rps']:>11,.0f} "
            f"{row['direct_with_reads_rps']:>11,.0f} {row['scorer_rps']:>11,.0f} "
            f"{row['vs_direct']:>10.2f} {row['offered_rps']:>12,.0f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} | "
            f"{'':>10} {row['mean_batch']:>5.1f} {row['read_pairs_ms']:>9.2f} {row['predict_ms']:>8.2f} "
            f"{row['write_results_ms']:>6.2f} | {'':>16} {row['cpu_scorer_ms']:>6.2f} {row['cpu_valkey_ms']:>6.2f} "
            f"{row['cpu_serving_ms']:>7.2f}"
        )
    for name, check in result["targets"].items():
        lines.append(f"{name}: {check['measured']} (target {check['target']}): {'met' if check['met'] else 'NOT met'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000, help="requests per throughput measurement")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long the fixed load is offered")
    parser.add_argument("--rate", type=float, default=None, help="offered requests/s (default: half the maximum)")
    parser.add_argument("--rounds", type=int, default=2, help="throughput measurements per setting (the best kept)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = bench(args.requests, args.seconds, args.rate, args.rounds)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "streaming.json").write_text(json.dumps(result, indent=1))
    print(format_table(result))


if __name__ == "__main__":
    main()
