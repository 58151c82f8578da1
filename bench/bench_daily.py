"""The daily run end to end (`railyard run`), this checkout beside an earlier one, in one run.

    uv run python -m bench.bench_daily --day0 DIR --day1 DIR [--before CHECKOUT] [--epochs 2]

``--day0`` holds the data up to one day, ``--day1`` the same and the next day (MovieLens format or
date-partitioned Parquet). Each step is the whole command, ``railyard run --epochs N
--auto-approve``, in a process of its own, its serving process and online store stopped after it
(so no step competes with what an earlier one left):

1. ``after, day 0, full``: this checkout on a fresh home: the first daily run, the empty online
   store filled, version 1 trained from scratch. The home is then copied aside, so each next-day
   step below starts from this very home, restored at its own path (a home names its folders);
2. ``after, day 1, warm``: the next day, ``RAILYARD_TRAINING_START=auto`` (warm from version 1
   unless a reason says otherwise: the run's log says which), on a machine where nothing runs:
   the run starts the online store (loading its data) and the serving process;
3. ``after, day 1, warm, services running``: the same, with the serving process and the online
   store started before the command, as a daily schedule finds them (`railyard run` leaves them
   running; `railyard up` supervises them); their processes are not among the step's;
4. ``before, day 1, warm`` and ``before, day 0, full`` (with ``--before``): the earlier
   checkout's code (run by this environment's Python) on the same restored home, as step 2, and
   on a fresh home, as step 1;
5. ``after, day 0, full, again`` and ``after, day 1, full``: a second fresh home, day 0 as in step
   1 (a second sample of it, after the earlier code's), then the next day with
   ``RAILYARD_TRAINING_START=full``: the full retrain the warm start is measured against.

Per step: wall seconds, the largest resident set of any of its processes (the command's, and the
serving process and online store it starts, sampled every 0.2 s from /proc), the holdout AUC, how
it trained, and seconds per task from the run's log. Results: a table on stdout and
bench/results/daily-<day1 folder name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TASK_FINISHED = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| INFO +\| Task run '(.+)-[0-9a-f]{3}' - Finished")
FLOW_BEGAN = re.compile(r"^(\d\d):(\d\d):(\d\d\.\d+) \| INFO +\| Flow run '.+' - Beginning flow run")


def _seconds(hours: str, minutes: str, seconds: str) -> float:
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def task_seconds(log: str) -> dict[str, float]:
    """Seconds per task, from the log: tasks run one after another, so each took from the end of
    the one before (or the flow's start) to its own end; repeated names add up."""
    seconds: dict[str, float] = {}
    last = None
    for line in log.splitlines():
        if began := FLOW_BEGAN.match(line):
            last = _seconds(*began.groups())
        elif (finished := TASK_FINISHED.match(line)) and last is not None:
            now = _seconds(*finished.groups()[:3])
            name = finished.group(4)
            seconds[name] = round(seconds.get(name, 0.0) + (now - last) % 86_400, 1)
            last = now
    return seconds


def _session_rss_mib(session: int) -> dict[int, float]:
    """Resident MiB of every process in a session (the command and what it started, detached or not
    but still in its session); processes that end between the listing and the read are skipped."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # fields after the name: state, ppid, pgrp, session
                continue
            for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[int(entry)] = int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return found


def run_step(name: str, code: Path, home: Path, data: Path, epochs: int, start: str | None) -> dict:
    """One ``railyard run`` of ``code`` on ``home`` (its services stopped after): its figures."""
    env = os.environ | {"RAILYARD_HOME": str(home), "PYTHONPATH": str(code)}
    env.pop("RAILYARD_TRAINING_START", None)
    if start:
        env["RAILYARD_TRAINING_START"] = start
    command = [sys.executable, "-m", "cli", "run", "--data", str(data), "--epochs", str(epochs), "--auto-approve"]
    log_path = home.parent / f"{name.replace(', ', '-').replace(' ', '_')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    peak: dict[int, float] = {}
    with open(log_path, "w") as log:
        began = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                for pid, mib in _session_rss_mib(process.pid).items():
                    peak[pid] = max(peak.get(pid, 0.0), mib)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code_returned = process.wait()
        wall = time.perf_counter() - began
        done.set()
        sampler.join()
    stop_services(code, env)
    text = log_path.read_text()
    auc = re.search(r"^holdout: auc ([0-9.]+)", text, re.MULTILINE)
    trained = re.search(r"training: (.+?)\n", text)
    return {
        "step": name,
        "exit": code_returned,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(max(peak.values(), default=0.0)),
        "processes_over_10_gib": sum(1 for mib in peak.values() if mib > 10 * 1024),
        "auc": float(auc.group(1)) if auc else None,
        "training": trained.group(1) if trained else None,
        "tasks_s": task_seconds(text),
        "log": str(log_path),
    }


def stop_services(code: Path, env: dict) -> None:
    """The serving process and the online store a run left (the home keeps their data)."""
    for command in (["serve", "--stop"], ["online-store", "stop"]):
        subprocess.run([sys.executable, "-m", "cli", *command], cwd=code, env=env, capture_output=True, check=False)


def start_services(home: Path) -> None:
    """The home's serving process and online store, started and answering."""
    env = os.environ | {"RAILYARD_HOME": str(home), "PYTHONPATH": str(REPO)}
    for command in (["serve", "--background"], ["online-store", "start"]):
        subprocess.run([sys.executable, "-m", "cli", *command], cwd=REPO, env=env, capture_output=True, check=True)


def restore(home: Path, saved: Path) -> None:
    """``home`` as it was when copied to ``saved`` (at the same path: a home names its folders)."""
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(saved, home, symlinks=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day0", type=Path, required=True)
    parser.add_argument("--day1", type=Path, required=True)
    parser.add_argument("--before", type=Path, help="an earlier checkout of Railyard (git worktree)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="railyard-bench-daily-"))
    steps = []

    def step(name: str, code: Path, home: Path, data: Path, start: str | None = None) -> None:
        steps.append(run_step(name, code, home, data.resolve(), args.epochs, start))
        print(json.dumps({key: value for key, value in steps[-1].items() if key != "tasks_s"}), flush=True)

    home, day0_home = scratch / "after" / "home", scratch / "after" / "home-day0"
    step("after, day 0, full", REPO, home, args.day0)
    shutil.copytree(home, day0_home, symlinks=True)
    step("after, day 1, warm", REPO, home, args.day1, "auto")
    restore(home, day0_home)
    start_services(home)
    step("after, day 1, warm, services running", REPO, home, args.day1, "auto")
    if args.before:
        restore(home, day0_home)
        step("before, day 1, warm", args.before.resolve(), home, args.day1, "auto")
        step("before, day 0, full", args.before.resolve(), scratch / "before" / "home", args.day0)
    step("after, day 0, full, again", REPO, scratch / "after-full" / "home", args.day0)
    step("after, day 1, full", REPO, scratch / "after-full" / "home", args.day1, "full")

    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"machine": platform.node(), "cpus": os.cpu_count(), "epochs": args.epochs, "steps": steps}
    (RESULTS / f"daily-{args.day1.resolve().name}.json").write_text(json.dumps(result, indent=2))
    print(format_table(steps))


def format_table(steps: list[dict]) -> str:
    tasks = list(dict.fromkeys(task for step in steps for task in step["tasks_s"]))
    lines = ["| | " + " | ".join(step["step"] for step in steps) + " |", "|---" + "|---:" * len(steps) + "|"]
    for task in tasks:
        lines.append(f"| {task} | " + " | ".join(str(step["tasks_s"].get(task, "")) for step in steps) + " |")
    for label, key in (("whole command, s", "wall_s"), ("peak RSS of a process, MiB", "peak_rss_mib"), ("AUC", "auc")):
        lines.append(f"| **{label}** | " + " | ".join(str(step[key]) for step in steps) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
