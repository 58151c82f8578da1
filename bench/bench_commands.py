"""How long the operator's quick commands take, each as a whole process, beside `railyard --help`.

    uv run python -m bench.bench_commands [--rounds 5] [--home DIR]

On a home with 10 registered versions: one real `railyard run --auto-approve` (trained,
published, served, promoted), then its stored SavedModel published 9 more times through the
model store and registered in MLflow as the flow's publish and register steps do (versions 2-9
rejected after their smoke tests, version 10 in staging with no run waiting for it). The online
store and the local server the run started stay up. Then, in rounds, each command runs as a
fresh process (`python -m cli ...`), in the same order each round:

- `--help`: the floor every command pays (Python, Typer, the CLI module);
- `status`: reconciles under the release lock, reads MLflow, asks the server its labels over
  REST, reads the online store;
- `approve 10`: refused after the whole check (reconcile, MLflow): version 10 has no retrain run
  waiting for a review. What a real approval adds is one call to Prefect's API to resume the run;
- `reject 10` without a comment: refused before anything is read;
- `reject 3 --comment …`: refused after the whole check: version 3 is already rejected;
- `serve --stop`: stops the running local server (restarted, untimed, before the next round).

Medians per command (wall, and CPU seconds of the command's process: on a shared machine the
wall time follows the others' load) and each as a ratio to `--help`'s median of the same run go
to bench/results/commands.json (git-ignored; bench/README.md keeps the figures). Targets: status <= 2 s, approve/reject <= 3 s, serve --stop <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from model_registry import open_store
from model_registry.stages import Stage, StageRegistry
from railyard.settings import Settings

RESULTS = Path(__file__).parent / "results" / "commands.json"
VERSIONS = 10
# name: (arguments, target in seconds, the exit code the case must end with)
COMMANDS = {
    "--help": (["--help"], None, 0),
    "status": (["status"], 2.0, 0),
    "approve (refused: no run waiting)": (["approve", str(VERSIONS)], 3.0, 2),
    "reject (refused: no comment)": (["reject", str(VERSIONS)], 3.0, 2),
    "reject (refused: already rejected)": (["reject", "3", "--comment", "worse"], 3.0, 2),
    "serve --stop": (["serve", "--stop"], 1.0, 0),
}


def register_versions(settings: Settings, export_dir: Path, count: int) -> list[int]:
    """Publish ``export_dir`` ``count`` times through the model store and register each version
    in MLflow as a candidate, as a run's publish and register steps do (each with its own data
    fingerprint, so the store keeps them apart); all but the last pass their smoke tests and are
    rejected, the last waits in staging. The published version numbers."""
    store = open_store(settings.resolved_store_uri, s3_endpoint_url=settings.s3_endpoint_url)
    stages = StageRegistry(settings.resolved_tracking_uri, settings.model_name, store)
    experiment = stages.client.get_experiment_by_name(settings.mlflow_experiment)
    experiment_id = (
        experiment.experiment_id if experiment else stages.client.create_experiment(settings.mlflow_experiment)
    )
    versions = []
    for index in range(count):
        run_id = stages.client.create_run(experiment_id, run_name=f"bench-commands-{index}").info.run_id
        metadata = {
            "mlflow_run_id": run_id,
            "metrics": {"auc": 0.7},
            "data_fingerprint": f"bench-commands-{time.time_ns()}-{index}",
            "code_version": "bench",
            "model_kind": settings.model_kind,
        }
        published = store.publish(settings.model_name, export_dir, metadata=metadata)
        lineage = {"mlflow_run_id": run_id, "store_uri": published.uri, "model_kind": settings.model_kind}
        stages.register(
            published.version, published.uri, run_id, lineage, description=f"store version {published.version}"
        )
        stages.transition(
            published.version, Stage.STAGING, actor="bench", reason="smoke tests passed", smoke_passed=True
        )
        if index < count - 1:
            stages.transition(published.version, Stage.REJECTED, actor="bench", reason="a bench version")
        versions.append(published.version)
    return versions


def build_home(home: Path, env: dict[str, str]) -> None:
    """A real run, then its version published again until the home holds ``VERSIONS``."""
    cli = [sys.executable, "-m", "cli"]
    print(f"a real run in {home} (trains, publishes, serves, promotes) ...", flush=True)
    subprocess.run([*cli, "run", "--auto-approve"], env=env, check=True, capture_output=True)
    os.environ.update(env)
    settings = Settings()
    store = open_store(settings.resolved_store_uri, s3_endpoint_url=settings.s3_endpoint_url)
    with tempfile.TemporaryDirectory() as scratch:
        export_dir = store.download(settings.model_name, 1, Path(scratch) / "export")
        register_versions(settings, export_dir, VERSIONS - 1)


def timed(command: list[str], env: dict[str, str], expected_code: int) -> tuple[float, float]:
    """Wall seconds, and the CPU seconds (user + system) the command's process used: on a shared
    machine the wall time follows the load, the CPU time much less."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli", *command], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != expected_code:
        raise SystemExit(f"`railyard {' '.join(command)}` exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--home", type=Path, help="reuse this home (built there on first use)")
    args = parser.parse_args()
    home = (args.home or Path(tempfile.mkdtemp(prefix="railyard-bench-commands-")) / "home").resolve()
    env = os.environ | {
        "RAILYARD_HOME": str(home),
        "RAILYARD_EPOCHS": "2",
        "RAILYARD_LOCAL_SERVING_REST_PORT": "0",
        "RAILYARD_LOCAL_SERVING_GRPC_PORT": "0",
        "RAILYARD_LOCAL_ONLINE_STORE_PORT": "0",
    }
    for variable in ("PREFECT_HOME", "PREFECT_API_URL"):  # the home's own Prefect world
        env.pop(variable, None)
    if not (home / "store").is_dir():
        build_home(home, env)
    cli = [sys.executable, "-m", "cli"]
    status = subprocess.run([*cli, "status", "--json"], env=env, capture_output=True, text=True, check=True)
    state = json.loads(status.stdout.strip().splitlines()[-1])
    print(f"{len(state['versions'])} versions; serving {state['serving']}; repaired {state['repaired']}", flush=True)

    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    load = [os.getloadavg()[0]]
    for round_ in range(args.rounds):
        subprocess.run([*cli, "serve", "--background"], env=env, check=True, capture_output=True)
        for name, (command, _, code) in COMMANDS.items():
            seconds, cpu_seconds = timed(command, env, code)
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
        load.append(os.getloadavg()[0])
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in COMMANDS), flush=True)
    subprocess.run([*cli, "serve", "--stop"], env=env, capture_output=True)
    subprocess.run([*cli, "online-store", "stop"], env=env, capture_output=True)

    floor = statistics.median(times["--help"])
    results = {}
    for name, (command, target, _) in COMMANDS.items():
        median = statistics.median(times[name])
        results[name] = {
            "command": f"railyard {' '.join(command)}",
            "seconds": [round(t, 3) for t in times[name]],
            "median_s": round(median, 3),
            "ratio_to_help": round(median / floor, 2),
            "cpu_seconds": [round(t, 3) for t in cpu[name]],
            "median_cpu_s": round(statistics.median(cpu[name]), 3),
            "target_s": target,
            "met": None if target is None else median <= target,
        }
        met = "" if target is None else f" (target {target:g} s: {'met' if median <= target else 'NOT met'})"
        print(
            f"{name:38s} median {median:6.2f} s  {median / floor:5.1f}x --help  "
            f"cpu {statistics.median(cpu[name]):5.2f} s{met}"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_1min": load},
                "rounds": args.rounds,
                "versions": len(state["versions"]),
                "commands": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
