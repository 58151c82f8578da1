"""The embedded default's daily run (what ``make run`` runs) at two commits, side by side in one
run: did a change slow the default path down?

    uv run python -m bench.bench_revisions --baseline REV [--candidate HEAD] [--rounds 2]

Each commit is checked out in a git worktree of its own (removed at the end) and run with this
environment's interpreter as ``python -m cli run --auto-approve --json`` from that worktree, in
a fresh RAILYARD_HOME on free ports: default data generated, Prefect's server, MLflow, the
local serving process and the embedded Valkey started, the flow run and the release
auto-approved; the serving process and Valkey are stopped afterwards, untimed. The sides
alternate (A B, B A, ...), each keeps its fastest run; ratio = candidate / baseline. Both
commits must run on this environment's packages (the lock of the newer one). Results go to
stdout and bench/results/revisions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RUN_TIMEOUT_S = 1_800


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()


def daily_run(worktree: Path, home: Path) -> float:
    """One daily run of the embedded default from ``worktree``; its wall time in seconds."""
    env = os.environ | {
        "RAILYARD_HOME": str(home),
        "RAILYARD_LOCAL_SERVING_REST_PORT": "0",
        "RAILYARD_LOCAL_SERVING_GRPC_PORT": "0",
        "RAILYARD_LOCAL_ONLINE_STORE_PORT": "0",
    }
    env.pop("PREFECT_HOME", None)  # the CLI sets up its own Prefect world under RAILYARD_HOME
    command = [sys.executable, "-m", "cli"]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [*command, "run", "--auto-approve", "--json"],
            cwd=worktree,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        seconds = time.perf_counter() - started
    finally:
        for stop in (("serve", "--stop"), ("online-store", "stop")):
            subprocess.run([*command, *stop], cwd=worktree, env=env, capture_output=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"the run in {worktree} failed:\n{done.stderr[-3000:]}")
    return seconds


def bench(baseline: str, candidate: str, rounds: int) -> dict:
    revisions = {"baseline": git("rev-parse", "--short", baseline), "candidate": git("rev-parse", "--short", candidate)}
    runs: dict[str, list[float]] = {side: [] for side in revisions}
    with tempfile.TemporaryDirectory(prefix="railyard-revisions-") as work:
        trees = {side: Path(work) / side for side in revisions}
        for side, tree in trees.items():
            git("worktree", "add", "--detach", str(tree), revisions[side])
        try:
            for round_ in range(rounds):
                for side in revisions if round_ % 2 == 0 else reversed(list(revisions)):
                    with tempfile.TemporaryDirectory(prefix=f"home-{side}-", dir=work) as home:
                        runs[side].append(round(daily_run(trees[side], Path(home)), 1))
                    print(f"{side} {revisions[side]}: {runs[side][-1]} s", file=sys.stderr)
        finally:
            for tree in trees.values():
                git("worktree", "remove", "--force", str(tree))
    best = {side: min(seconds) for side, seconds in runs.items()}
    return {
        "date": time.strftime("%Y-%m-%d"),
        "revisions": revisions,
        "rounds": rounds,
        "runs_s": runs,
        "best_s": best,
        "candidate_over_baseline": round(best["candidate"] / best["baseline"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the earlier commit")
    parser.add_argument("--candidate", default="HEAD", help="the commit measured against it")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side")
    args = parser.parse_args()
    result = bench(args.baseline, args.candidate, args.rounds)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "revisions.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
