"""The ranking service (``railyard rank-server``): ``/v1/recommend`` and ``/v1/score`` latency and
requests/s at a fixed concurrency, side by side in one run with the direct gRPC Predict call on
the same features, assembled beforehand.

    uv run python -m bench.bench_ranking [--rounds 3] [--requests 1000] [--concurrency 4]

Setup, untimed, all in a temporary RAILYARD_HOME:

- a synthetic MovieLens-format data set (``railyard.synthetic``: USERS users, MOVIES movies,
  DAYS x RATINGS_PER_DAY ratings) and the production model trained on it for EPOCHS epochs, as
  the pipeline does (load, build features, ``training.train_model``, ``export_for_serving``: both
  signatures, golden and warm-up requests);
- the local TF-Serving stand-in (``python -m infra.local_server``, free ports) serving it as
  version 1, made `stable` by the release's own label moves (``deploy.make_stable``, which
  points `canary` at it too, as after any promotion: the service routes users by the share);
- an embedded Valkey on a free port, rebuilt from every rating (``OnlineStore.rebuild``:
  aggregates, each user's rated movies, the popularity ranking the candidates come from);
- the service as production runs it: ``python -m cli rank-server`` (uvicorn) in a subprocess,
  pointed at both by RAILYARD_SERVING_GRPC/REST and RAILYARD_ONLINE_STORE_URL, ready once
  ``/readyz`` answers 200.

Then ``--concurrency`` client threads, each with a keep-alive connection (or gRPC channel) of its
own, send ``--requests`` requests back to back per measurement, cycling over ASKED_USERS users:

1. recommend: ``GET /v1/recommend?userId=U&k=10&candidates=100``: the user's 100 most popular
   unrated movies and their features (one store round trip), one Predict of 100 rows, the top 10;
2. score: ``POST /v1/score`` with the same 100 (user, movie) pairs: one ``read_pairs``, one
   Predict of 100 rows, 100 predictions back;
3. direct: ``ServingClient.predict_grpc_versioned`` (label `stable`, signature ``features``) with
   the very columns the service sends for that user, read from the store before the clock: the
   model call alone, the baseline;
4. floor: what any recommendation through a separate HTTP service and store pays before its own
   logic, done by the client back to back: a ``/healthz`` round trip to the service, the user's
   ``read_candidates`` (its own store connection), and the direct call. Its ratio to direct is a
   lower bound for the service's.

Checked once before timing: /v1/score's scores equal the direct call's on the same features, and
/v1/recommend's top 10 are the direct call's top 10. An untimed pass of each side comes first;
the sides then alternate (A B C, C B A, ...) and each keeps its best round (lowest p99); every
round's clients connect and send one untimed request before the clock. Overhead = service /
direct, at p50 and p99. The service's own figures (its ``/metrics``, read before and after each
of its rounds) split its time into the store read, the Predict call and the rest of the handler;
what the client sees beyond the handler is HTTP, JSON and the event loop. Each round also counts
the CPU time (``/proc/<pid>/stat``) the clients, the service, the stand-in and Valkey used per
request: at 4 clients on 2 cores the sides are CPU-bound, so that is what their latencies follow.
Results go to stdout as a table and to bench/results/ranking.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from infra.local_server import background
from infra.online_store import valkey_process
from infra.online_store.store import OnlineStore, connect
from infra.rollout import deploy
from infra.tfserving.client import ServingClient
from infra.tfserving.model_config import ensure_config_file
from infra.tfserving.protocol import CONFIG_FILE
from infra.tfserving.target import ServingTarget
from railyard import contract
from railyard.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
MODEL = "recmodel"
USERS, MOVIES, DAYS, RATINGS_PER_DAY = 3_000, 2_000, 10, 20_000
EPOCHS = 2
CANDIDATES, K = 100, 10
ASKED_USERS = 200  # the users requests cycle over
READY_TIMEOUT_S = 240.0  # the service imports TensorFlow before its port opens
TARGETS = {"p99_ms": 50.0, "overhead_p99": 1.5}  # below / at most
SIDES = ("recommend", "score", "direct", "floor")


# --- setup ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_and_export(settings: Settings, work: Path):
    """Synthetic data, and the production model trained briefly on it and exported as the pipeline
    exports it: the data set, the export folder, figures about both."""
    from infra.tfserving.export import export_for_serving
    from railyard import features, loaders, training
    from railyard.kinds.registry import load_kind
    from railyard.synthetic import generate_movielens

    data_dir = work / "data"
    generate_movielens(data_dir, users=USERS, movies=MOVIES, days=DAYS, ratings_per_day=RATINGS_PER_DAY, seed=7)
    data = loaders.load_dataset(data_dir)
    feature_set = features.build_feature_set(data, settings.holdout_fraction)
    features.write_feature_set(feature_set, work / "features")
    started = time.perf_counter()
    trained = training.train_model(work / "features", settings.train_config(), load_kind(settings.model_kind))
    info = {
        "ratings": len(data.ratings),
        "training_rows": trained.train_rows,
        "epochs": len(trained.history.get("loss", [])),
        "validation_auc": round(max(trained.history.get("val_auc", [0.0])), 4),
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    export = export_for_serving(trained, feature_set.without_training_rows(), work / "export", MODEL, settings.seed)
    return data, export, info


@contextmanager
def local_serving(settings: Settings, export: Path) -> Iterator[tuple[ServingTarget, int]]:
    """The local stand-in on free ports serving ``export`` as version 1, labelled `stable`; its pid."""
    model_root = settings.resolved_serving_model_root
    ensure_config_file(model_root / CONFIG_FILE)
    try:
        state = background.ensure_local_server(settings.local_serving_dir, model_root / CONFIG_FILE, 0, 0)
        token = background.reload_token(settings.local_serving_dir)
        target = ServingTarget(state.grpc_target, state.rest_url, model_root, str(model_root), reload_token=token)
        shutil.copytree(export, model_root / MODEL / "1")
        with target.client() as client:
            deploy.make_stable(client, target, MODEL, 1, timeout_s=600)
        yield target, state.pid
    finally:
        background.stop(settings.local_serving_dir)


@contextmanager
def embedded_valkey(settings: Settings) -> Iterator[tuple[str, int]]:
    try:
        state = valkey_process.ensure_valkey(settings)
        yield valkey_process.url(valkey_process.server_dir(settings), state), state.pid
    finally:
        valkey_process.stop(settings)


@contextmanager
def rank_server(settings: Settings, target: ServingTarget, store_url: str) -> Iterator[tuple[int, int]]:
    """``railyard rank-server`` in a subprocess on a free port, once ready (its port and pid);
    stopped at the end."""
    port = free_port()
    env = os.environ | {
        "RAILYARD_HOME": str(settings.home),
        "RAILYARD_MODEL_NAME": MODEL,
        "RAILYARD_SERVING_GRPC": target.grpc,
        "RAILYARD_SERVING_REST": target.rest,
        "RAILYARD_ONLINE_STORE_URL": store_url,  # it carries the password: the environment, not argv
    }
    log_path = settings.home / "rank-server.log"
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "cli", "rank-server", "--port", str(port), "--candidates", str(CANDIDATES)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_ready(child, port, log_path)
        yield port, child.pid
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_ready(child: subprocess.Popen, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"rank-server exited with {child.returncode}:\n{log_path.read_text()[-3000:]}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.25)
    raise TimeoutError(f"rank-server not ready after {READY_TIMEOUT_S:g} s:\n{log_path.read_text()[-3000:]}")


# --- requests ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """One user's request on each side: the same 100 (user, movie) pairs."""

    user: int
    path: str  # /v1/recommend
    body: bytes  # /v1/score
    columns: dict[str, np.ndarray]  # the direct Predict's inputs, as the service assembles them


def asks_for(store: OnlineStore, users: np.ndarray) -> list[Ask]:
    asks = []
    for user in users.tolist():
        found = store.read_candidates(user, CANDIDATES)
        if len(found.movie_ids) < CANDIDATES:
            continue
        movies = found.movie_ids.tolist()
        instances = [{"userId": user, "movieId": movie} for movie in movies]
        columns = contract.feature_columns(np.full(CANDIDATES, user), found.movie_ids, found.users, found.movies)
        path = f"/v1/recommend?userId={user}&k={K}&candidates={CANDIDATES}"
        asks.append(Ask(user, path, json.dumps({"instances": instances}).encode(), columns))
    if not asks:
        raise RuntimeError(f"no user has {CANDIDATES} candidates")
    return asks


class Http:
    """A keep-alive HTTP/1.1 connection to the service; answers parsed, non-200 an error."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: bytes | None = None) -> dict:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path[:60]} answered {response.status}: {data[:300]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.connection.close()


class Floor:
    """The floor side's client: HTTP to the service, the store and TF Serving, each its own connection."""

    def __init__(self, port: int, target: ServingTarget, store_url: str, home: Path):
        self.http = Http(port)
        self.store = connect(Settings(home=home, online_store_url=store_url))
        self.serving = target.client(timeout_s=30.0, attempts=1)

    def call(self, ask: Ask) -> None:
        self.http.call("GET", "/healthz")
        found = self.store.read_candidates(ask.user, CANDIDATES)
        columns = contract.feature_columns(
            np.full(len(found.movie_ids), ask.user), found.movie_ids, found.users, found.movies
        )
        self.serving.predict_grpc_versioned(
            MODEL, columns, label=contract.STABLE, signature_name=contract.FEATURES_SIGNATURE
        )

    def close(self) -> None:
        self.http.close()
        self.store.client.close()
        self.serving.close()


def direct_scores(client: ServingClient, ask: Ask) -> np.ndarray:
    outputs, _ = client.predict_grpc_versioned(
        MODEL, ask.columns, label=contract.STABLE, signature_name=contract.FEATURES_SIGNATURE
    )
    return contract.scores_of(outputs)


def check_same_scores(port: int, target: ServingTarget, asks: list[Ask]) -> dict:
    """The service scores what the direct call scores, on the same features."""
    http_client = Http(port)
    try:
        with target.client() as serving:
            for ask in asks[:5]:
                direct = direct_scores(serving, ask)
                scored = np.array([p for (p,) in http_client.call("POST", "/v1/score", ask.body)["predictions"]])
                if not np.allclose(scored, direct, rtol=1e-6, atol=1e-7):
                    raise RuntimeError(f"/v1/score differs from the direct call for user {ask.user}")
                top = np.lexsort((ask.columns["movieId"], -direct))[:K]
                found = http_client.call("GET", ask.path)["recommendations"]
                if [item["movieId"] for item in found] != ask.columns["movieId"][top].tolist() or not np.allclose(
                    [item["score"] for item in found], direct[top], rtol=1e-6, atol=1e-7
                ):
                    raise RuntimeError(f"/v1/recommend's top {K} differ from the direct call's for user {ask.user}")
    finally:
        http_client.close()
    return {"score_equals_direct": True, "recommend_top_k_equals_direct": True, "users_checked": min(5, len(asks))}


# --- measuring -----------------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds each process has used so far (/proc/<pid>/stat; all its threads)."""
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14, 15)
    return used


def measure(
    concurrency: int,
    requests: int,
    connect_: Callable[[], object],
    send: Callable[[object, int], None],
    pids: dict[str, int],
) -> dict:
    """``requests`` calls of ``send(client, i)`` from ``concurrency`` threads, each with its own
    client, back to back: latency percentiles, requests/s, and the CPU time each process in
    ``pids`` used per request meanwhile."""
    clients = [connect_() for _ in range(concurrency)]
    try:
        for index, client in enumerate(clients):
            send(client, index)  # untimed: the connection is up and warm
        seconds: list[list[float]] = [[] for _ in clients]
        errors: list[BaseException] = []
        barrier = threading.Barrier(concurrency + 1)

        def worker(index: int) -> None:
            client, own = clients[index], seconds[index]
            barrier.wait()
            try:
                for number in range(index, requests, concurrency):
                    started = time.perf_counter()
                    send(client, number)
                    own.append(time.perf_counter() - started)
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(index,)) for index in range(concurrency)]
        for thread in threads:
            thread.start()
        cpu_before = cpu_seconds(pids)
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        cpu_after = cpu_seconds(pids)
    finally:
        for client in clients:
            client.close()
    if errors:
        raise errors[0]
    values = np.concatenate([np.asarray(own) for own in seconds]) * 1000
    p50, p99 = np.percentile(values, [50, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p99_ms": round(float(p99), 2),
        "mean_ms": round(float(values.mean()), 2),
        "max_ms": round(float(values.max()), 2),
        "requests_per_s": round(len(values) / wall, 1),
        "n": len(values),
        "cpu_ms_per_request": {
            name: round(1000 * (cpu_after[name] - cpu_before[name]) / len(values), 2) for name in pids
        },
    }


def service_seconds(port: int) -> dict[str, tuple[float, float]]:
    """The service's histograms from /metrics: series -> (sum of seconds, count)."""
    client = Http(port)
    try:
        client.connection.request("GET", "/metrics")
        text = client.connection.getresponse().read().decode()
    finally:
        client.close()
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                labels = sample.labels
                what = labels.get("endpoint") or labels.get("operation") or "predict"
                key = f"{family.name.removeprefix('railyard_ranking_')}:{what}"
                pair = totals.setdefault(key, [0.0, 0.0])
                pair[sample.name.endswith("_count")] += sample.value
    return {key: (total, count) for key, (total, count) in totals.items()}


def inside_service(before: dict, after: dict, endpoint: str) -> dict:
    """Mean ms per request the service spent, by its own clock, between two /metrics reads."""
    store_read = {"recommend": "online_store_seconds:candidates", "score": "online_store_seconds:read_pairs"}[endpoint]

    def mean_ms(key: str) -> float | None:
        total = after.get(key, (0.0, 0.0))[0] - before.get(key, (0.0, 0.0))[0]
        count = after.get(key, (0.0, 0.0))[1] - before.get(key, (0.0, 0.0))[1]
        return round(1000 * total / count, 2) if count else None

    return {
        "handler_ms": mean_ms(f"request_seconds:{endpoint}"),
        "store_read_ms": mean_ms(store_read),
        "predict_ms": mean_ms("tfserving_seconds:predict"),
    }


def bench(rounds: int, requests: int, concurrency: int) -> dict:
    wall = time.perf_counter()
    load_before = os.getloadavg()
    with ExitStack() as stack:
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="railyard-bench-ranking-")))
        settings = Settings(
            home=home,
            model_name=MODEL,
            local_online_store_port=0,
            local_serving_rest_port=0,
            local_serving_grpc_port=0,
            epochs=EPOCHS,
        )
        data, export, model_info = train_and_export(settings, home / "work")
        store_url, valkey_pid = stack.enter_context(embedded_valkey(settings))
        store = connect(Settings(home=home, online_store_url=store_url))
        store.rebuild(data.ratings, data.movies)
        users = np.random.default_rng(3).permutation(np.unique(data.ratings.get_column("userId").to_numpy()))
        asks = asks_for(store, users[:ASKED_USERS])
        target, serving_pid = stack.enter_context(local_serving(settings, export))
        port, service_pid = stack.enter_context(rank_server(settings, target, store_url))
        pids = {"clients": os.getpid(), "rank_server": service_pid, "local_server": serving_pid, "valkey": valkey_pid}
        checks = check_same_scores(port, target, asks)

        def ask(number: int) -> Ask:
            return asks[number % len(asks)]

        sides = {
            "recommend": (lambda: Http(port), lambda client, n: client.call("GET", ask(n).path)),
            "score": (lambda: Http(port), lambda client, n: client.call("POST", "/v1/score", ask(n).body)),
            "direct": (lambda: target.client(timeout_s=30.0, attempts=1), lambda c, n: direct_scores(c, ask(n))),
            "floor": (lambda: Floor(port, target, store_url, home), lambda floor, n: floor.call(ask(n))),
        }
        for name in SIDES:  # untimed: every path warm before the first round
            measure(concurrency, min(requests, 200), *sides[name], pids)
        runs: dict[str, list[dict]] = {name: [] for name in SIDES}
        for round_ in range(rounds):
            for name in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                before = service_seconds(port) if name in ("recommend", "score") else {}
                figures = measure(concurrency, requests, *sides[name], pids)
                if name in ("recommend", "score"):
                    figures["in_service"] = inside_service(before, service_seconds(port), name)
                runs[name].append(figures)
        store.client.close()
    best = {name: min(side_runs, key=lambda figures: figures["p99_ms"]) for name, side_runs in runs.items()}
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "code": code_version(),
        "load_average_1_5_15": {
            "before": [round(v, 2) for v in load_before],
            "after": [round(v, 2) for v in os.getloadavg()],
        },
        "data": {"users": USERS, "movies": MOVIES, **model_info},
        "candidates": CANDIDATES,
        "k": K,
        "asked_users": len(asks),
        "concurrency": concurrency,
        "requests_per_round": requests,
        "rounds": rounds,
        "seconds": round(time.perf_counter() - wall, 1),
        "checks": checks,
        "best": best,
        "overhead_vs_direct": {
            f"{name}_{stat}": round(best[name][f"{stat}_ms"] / best["direct"][f"{stat}_ms"], 2)
            for name in ("recommend", "score", "floor")
            for stat in ("p50", "p99")
        },
        "runs": runs,
    }
    result["targets"] = targets(result)
    return result


def targets(result: dict) -> dict:
    checks = {}
    for name in ("recommend", "score"):
        p99, ratio = result["best"][name]["p99_ms"], result["overhead_vs_direct"][f"{name}_p99"]
        checks[f"{name}_p99_ms"] = {
            "target": f"< {TARGETS['p99_ms']:g}",
            "measured": p99,
            "met": p99 < TARGETS["p99_ms"],
        }
        checks[f"{name}_overhead_p99"] = {
            "target": f"<= {TARGETS['overhead_p99']:g}",
            "measured": ratio,
            "met": ratio <= TARGETS["overhead_p99"],
        }
    return checks


def code_version() -> str:
    """The commit measured, and whether the service's code differed from it (uncommitted changes)."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    changed = subprocess.run(
        ["git", "status", "--porcelain", "infra", "cli"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    dirty = " + uncommitted changes in infra/ or cli/" if changed.stdout.strip() else ""
    return commit.stdout.strip() + dirty


def machine() -> str:
    import fastapi
    import grpc
    import tensorflow as tf
    import uvicorn

    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}, "
        f"grpcio {grpc.__version__}, FastAPI {fastapi.__version__}, uvicorn {uvicorn.__version__}"
    )


def format_table(result: dict) -> str:
    best, ratios, met = result["best"], result["overhead_vs_direct"], result["targets"]

    def verdict(name: str) -> str:
        return f"{met[name]['target']} {'met' if met[name]['met'] else 'NOT met'}"

    def row(*cells) -> str:
        return "{:<16}{:>9}{:>9}{:>9}{:>10}{:>10}   {}".format(*cells)

    rows = [
        f"ranking service: {result['candidates']} candidates, k={result['k']}, {result['concurrency']} clients, "
        f"{result['requests_per_round']:,} requests per round, best of {result['rounds']} rounds per side",
        f"{result['machine']}; load average before {result['load_average_1_5_15']['before']}",
        row("", "p50 ms", "p99 ms", "req/s", "p50 ×dir", "p99 ×dir", "targets (p99 ms; p99 ×direct)"),
    ]
    for name in ("recommend", "score"):
        figures = best[name]
        rows.append(
            row(
                f"/v1/{name}",
                f"{figures['p50_ms']:.2f}",
                f"{figures['p99_ms']:.2f}",
                f"{figures['requests_per_s']:.0f}",
                f"{ratios[f'{name}_p50']:.2f}",
                f"{ratios[f'{name}_p99']:.2f}",
                f"{verdict(f'{name}_p99_ms')}; {verdict(f'{name}_overhead_p99')}",
            )
        )
    direct = best["direct"]
    figures = [f"{direct[key]:.2f}" for key in ("p50_ms", "p99_ms")]
    rows.append(row("direct Predict", *figures, f"{direct['requests_per_s']:.0f}", "", "", ""))
    floor = best["floor"]
    figures = [f"{floor[key]:.2f}" for key in ("p50_ms", "p99_ms")]
    ratios_ = [f"{ratios[f'floor_{stat}']:.2f}" for stat in ("p50", "p99")]
    rows.append(row("floor", *figures, f"{floor['requests_per_s']:.0f}", *ratios_, "healthz + store read + Predict"))
    rows.append("mean ms per request: client-side | the service's clock: handler, store read, Predict")
    for name in ("recommend", "score"):
        inside = best[name]["in_service"]
        rows.append(
            f"  /v1/{name:<12}{best[name]['mean_ms']:>7.2f} | {inside['handler_ms']:.2f}, "
            f"{inside['store_read_ms']:.2f}, {inside['predict_ms']:.2f}"
        )
    processes = list(best["direct"]["cpu_ms_per_request"])
    rows.append(f"{'CPU ms / request':<18}" + "".join(f"{name:>13}" for name in [*processes, "total"]))
    for name in SIDES:
        cpu = best[name]["cpu_ms_per_request"]
        rows.append(f"  {name:<16}" + "".join(f"{value:>13.2f}" for value in [*cpu.values(), sum(cpu.values())]))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per side")
    parser.add_argument("--requests", type=int, default=1_000, help="requests per measurement")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads, one connection each")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = bench(args.rounds, args.requests, args.concurrency)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "ranking.json").write_text(json.dumps(result, indent=1))
    print(format_table(result))


if __name__ == "__main__":
    main()
