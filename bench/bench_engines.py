"""The feature build and validation on both engines, side by side in one run: Polars on this
machine (the embedded default) and the partitioned build on a Dask LocalCluster of worker
processes (``RAILYARD_FEATURE_ENGINE=dask``).

    uv run python -m bench.bench_engines --size 25m [--rounds 1] [--workers 2] [--worker-memory 8GiB]

Each side runs in a fresh subprocess, so its peak RSS (the kernel's high-water mark, VmHWM) is
its own: for Polars, the one process (load, raw validation, build, write, feature validation: the
flow's steps); for Dask, the driver and each worker process (read on the worker when the build
ends). Wall time includes starting the cluster. The sides alternate (A B, B A, ...) and each
keeps its fastest round. Data: the bench's generated data set as date-partitioned Parquet
(``railyard.synthetic``, cached under RAILYARD_BENCH_CACHE/bench-data/<size>-parquet); 100m is
generated a day at a time. Results: a table and bench/results/engines-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import SIZES, peak_rss_mib

ENGINE_SIZES = SIZES | {"100m": dict(users=640_000, movies=120_000, days=100, ratings_per_day=1_000_000)}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
HOLDOUT_FRACTION = 0.2
STAGE = "stage: "


def dataset(size: str, cache: Path) -> Path:
    from railyard.synthetic import generate_movielens

    path = cache / "bench-data" / f"{size}-parquet"
    if not (path / "ratings").is_dir():
        shutil.rmtree(path, ignore_errors=True)
        generate_movielens(path, **ENGINE_SIZES[size], seed=7, fmt="parquet")
    return path


def polars_side(data_dir: Path, work: Path) -> dict:
    from railyard import features, validation
    from railyard.loaders import load_dataset
    from railyard.settings import Settings

    bounds = Settings(_env_file=None, max_rows=10**10).validation_bounds()
    started = time.perf_counter()
    stage("load")
    data = load_dataset(data_dir)
    stage("raw validation")
    validation.raise_for_failures(validation.validate_ratings(data.ratings, bounds, work / "reports"))
    stage("build")
    built = features.build_feature_set(data, HOLDOUT_FRACTION)
    del data
    stage("write")
    features.write_feature_set(built, work / "features")
    stage("feature validation")
    validation.raise_for_failures(
        *validation.validate_features(built.train, built.holdout, built.cutoff_ts, bounds, work / "reports")
    )
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": {"driver": peak_rss_mib()}}


def stage(name: str) -> None:
    """Where a side is, for a run stopped over the memory limit."""
    print(f"{STAGE}{name}", file=sys.stderr, flush=True)


def dask_side(data_dir: Path, work: Path, workers: int, worker_memory: str) -> dict:
    from distributed import Client, LocalCluster

    from railyard import features, partitioned
    from railyard.loaders import parquet_layout, read_movies
    from railyard.settings import Settings

    bounds = Settings(_env_file=None, max_rows=10**10).validation_bounds()
    started = time.perf_counter()
    files, movies_file = parquet_layout(data_dir)
    fingerprint = features.feature_fingerprint(sorted([*files, *([movies_file] if movies_file else [])]), 0.2)
    movies = read_movies(movies_file) if movies_file else None
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=worker_memory,
            local_directory=str(work / "dask"),
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        partitioned.build_on_cluster(
            client, files, movies, HOLDOUT_FRACTION, work / "features", fingerprint, bounds, work / "reports"
        )
        seconds = time.perf_counter() - started
        on_workers = client.run(peak_rss_mib)
    peaks = {"driver": peak_rss_mib()} | {f"worker {i + 1}": peak for i, peak in enumerate(on_workers.values())}
    return {"seconds": seconds, "peak_rss_mib": peaks}


def run_side(side: str, data_dir: Path, workers: int, worker_memory: str, rss_limit_gib: float) -> dict:
    """One side in a fresh subprocess, its output folder removed afterwards. A side any of whose
    processes grows past ``rss_limit_gib`` is stopped there and reported as not fitting."""
    with tempfile.TemporaryDirectory(prefix=f"engines-{side}-") as work:
        command = [sys.executable, "-m", "bench.bench_engines", "--side", side, "--data", str(data_dir), "--work", work]
        command += ["--workers", str(workers), "--worker-memory", worker_memory]
        started = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(command, stdout=out, stderr=err, text=True, start_new_session=True)
            largest = 0
            while child.poll() is None:
                largest = max(largest, max(rss_mib(pid) for pid in process_tree(child.pid)))
                if largest > rss_limit_gib * 1024:
                    os.killpg(child.pid, signal.SIGKILL)
                    child.wait()
                    seconds = time.perf_counter() - started
                    err.seek(0)
                    stages = [line.removeprefix(STAGE) for line in err.read().splitlines() if line.startswith(STAGE)]
                    return {
                        "seconds": seconds,
                        "exceeded_gib": rss_limit_gib,
                        "in_stage": stages[-1] if stages else None,
                        "peak_rss_mib": {"largest": largest},
                    }
                time.sleep(0.2)
            out.seek(0), err.seek(0)
            if child.returncode != 0:
                raise RuntimeError(f"the {side} side failed:\n{err.read()[-4000:]}")
            return json.loads(out.read().strip().splitlines()[-1])


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the Dask side's worker processes)."""
    found, index = [pid], 0
    while index < len(found):
        try:
            children = Path(f"/proc/{found[index]}/task/{found[index]}/children").read_text().split()
        except OSError:
            children = []
        found += [int(child) for child in children]
        index += 1
    return found


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def format_table(result: dict) -> str:
    rows = [f"feature build + validation, {result['size']} ({result['ratings']:,} ratings), best of {result['rounds']}"]
    for side in ("polars", "dask"):
        best = result["best"][side]
        peaks = ", ".join(f"{name} {mib / 1024:.2f} GiB" for name, mib in best["peak_rss_mib"].items())
        rows.append(f"  {side:<7}{best['seconds']:>9.1f} s   peak RSS: {peaks}")
    rows.append(f"  dask / polars: {result['dask_over_polars']:.2f}x wall time")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="25m", choices=sorted(ENGINE_SIZES))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="8GiB")
    parser.add_argument(
        "--sides", default="polars,dask", help="which sides to run (100m: dask alone, if Polars does not fit)"
    )
    parser.add_argument(
        "--rss-limit-gib", type=float, default=20.0, help="a side with a process past this is stopped: it does not fit"
    )
    parser.add_argument("--side", choices=("polars", "dask"), help=argparse.SUPPRESS)  # one side, in its subprocess
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "polars":
        print(json.dumps(polars_side(args.data, args.work)))
        return
    if args.side == "dask":
        print(json.dumps(dask_side(args.data, args.work, args.workers, args.worker_memory)))
        return

    cache = Path(os.environ.get("RAILYARD_BENCH_CACHE", ".railyard"))
    data_dir = dataset(args.size, cache)
    sides = args.sides.split(",")
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_number in range(args.rounds):
        for side in sides if round_number % 2 == 0 else reversed(sides):
            runs[side].append(run_side(side, data_dir, args.workers, args.worker_memory, args.rss_limit_gib))
            print(f"{side}: {runs[side][-1]}", flush=True)
    finished = {side: [run for run in found if "exceeded_gib" not in run] or found for side, found in runs.items()}
    best = {side: min(found, key=lambda run: run["seconds"]) for side, found in finished.items()}
    spec = ENGINE_SIZES[args.size]
    result = {
        "size": args.size,
        "ratings": spec["days"] * spec["ratings_per_day"],
        "rounds": args.rounds,
        "workers": args.workers,
        "worker_memory": args.worker_memory,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "runs": runs,
        "best": best,
    }
    if {"polars", "dask"} <= set(best) and not any("exceeded_gib" in run for run in best.values()):
        result["dask_over_polars"] = best["dask"]["seconds"] / best["polars"]["seconds"]
        print(format_table(result))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"engines-{args.size}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
