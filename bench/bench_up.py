"""How long `railyard up` takes until every health check passes, beside the hand set-up it replaces.

    uv run python -m bench.bench_up [--rounds 2]

Each round, in the same order, on free ports (RAILYARD_PLATFORM_USUAL_PORTS=false):

- `baseline`: what the README asked for before, started by hand at once: `prefect server start`
  and `mlflow server`, both on SQLite files in a fresh folder, until both health endpoints answer;
- `up (fresh home)`: `railyard up` on a new home, until it returns (PostgreSQL initialised, both
  databases migrated, every service healthy), then `railyard down` (timed too);
- `up (again)`: `railyard up` on the same home once more (PostgreSQL and the schemas exist).

Medians (wall seconds) and each as a ratio to the baseline's median of the same run go to
bench/results/up.json (git-ignored; bench/README.md keeps the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import infra.platform.service as service

RESULTS = Path(__file__).parent / "results" / "up.json"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def baseline(scratch: Path) -> float:
    """Prefect's server and MLflow's, by hand, on SQLite: seconds until both answer their health checks."""
    scratch.mkdir(parents=True, exist_ok=True)
    prefect_port, mlflow_port = service.free_port(), service.free_port()
    env = os.environ | {"PREFECT_HOME": str(scratch / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    started = time.perf_counter()
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port)]
            + ["--backend-store-uri", f"sqlite:///{scratch / 'mlflow.db'}", "--workers", "1"],
            env=env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            cwd=scratch,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        urls = [f"http://127.0.0.1:{prefect_port}/api/health", f"http://127.0.0.1:{mlflow_port}/health"]
        while not all(map(_healthy, urls)):
            if any(server.poll() is not None for server in servers):
                raise RuntimeError("a baseline server exited")
            time.sleep(0.2)
        return time.perf_counter() - started
    finally:
        for server in servers:
            service.stop_process(server.pid, lambda s=server: s.poll() is None, 15, group=False)


def railyard(home: Path, *args: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAILYARD_", "PREFECT_API_URL"))}
    env |= {"RAILYARD_HOME": str(home), "RAILYARD_PLATFORM_USUAL_PORTS": "false"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=REPO_ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    rounds = parser.parse_args().rounds
    timings: dict[str, list[float]] = {"baseline": [], "up (fresh home)": [], "down": [], "up (again)": []}
    for _ in range(rounds):
        # Not under an owner-only folder: as root, PostgreSQL runs as another user who must reach it.
        scratch = Path(tempfile.mkdtemp(prefix="railyard-bench-up-"))
        try:
            timings["baseline"].append(baseline(scratch / "baseline"))
            home = scratch / "home"
            timings["up (fresh home)"].append(railyard(home, "up"))
            timings["down"].append(railyard(home, "down"))
            timings["up (again)"].append(railyard(home, "up"))
            railyard(home, "down")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    base = statistics.median(timings["baseline"])
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rounds": rounds,
        "medians_s": {name: round(statistics.median(values), 2) for name, values in timings.items()},
        "ratio_to_baseline": {name: round(statistics.median(values) / base, 2) for name, values in timings.items()},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
