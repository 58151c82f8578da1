"""The pipeline's commands: data for a try, one retrain now, the deployments and their worker."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from cli.common import OPTIONS, command_settings, fail

PANEL = "Pipeline"
app = typer.Typer()


@app.command("generate-data", rich_help_panel=PANEL)
def generate_data(
    out: Annotated[Path, typer.Option(help="Output folder (ratings.csv + movies.csv).")],
    users: Annotated[int, typer.Option(min=1)] = 600,
    movies: Annotated[int, typer.Option(min=1)] = 1500,
    days: Annotated[int, typer.Option(min=1)] = 30,
    ratings_per_day: Annotated[int, typer.Option(min=1)] = 3000,
    seed: int = 7,
    fmt: Annotated[str, typer.Option("--format", help="csv, or parquet (date=YYYY-MM-DD partitions)")] = "csv",
    mode: Annotated[
        str,
        typer.Option(
            help="sessions (users arrive over the period and rate in sittings, like MovieLens) or "
            "stationary (every day drawn alike)"
        ),
    ] = "sessions",
) -> None:
    """Generate a synthetic MovieLens-format data set with learnable structure."""
    from railyard.synthetic import generate_movielens

    if fmt not in ("csv", "parquet"):
        fail(f"--format must be csv or parquet, not {fmt!r}", "nothing was written; give --format csv or parquet")
    if mode not in ("sessions", "stationary"):
        fail(
            f"--mode must be sessions or stationary, not {mode!r}",
            "nothing was written; give --mode sessions or stationary",
        )
    try:
        summary = generate_movielens(
            out,
            users=users,
            movies=movies,
            days=days,
            ratings_per_day=ratings_per_day,
            seed=seed,
            fmt=fmt,
            mode=mode,
        )
    except (FileExistsError, ValueError) as error:
        fail(str(error), "nothing was written; fix what the message names (another --out folder, an option's value)")
    typer.echo(
        f"wrote {summary.n_ratings:,} ratings ({summary.n_users:,} users, {summary.n_movies:,} movies, "
        f"positive rate {summary.positive_rate:.2f}) to {summary.out_dir}"
    )


@app.command(rich_help_panel=PANEL)
def run(
    data: Annotated[
        Path | None, typer.Option("--data", help="MovieLens-format folder or date-partitioned Parquet.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Maximum training epochs.")] = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Promote without a reviewer when every check passes.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON line at the end.")] = False,
) -> None:
    """Run the daily retraining flow once, now (generates a small data set on first use).

    Without --auto-approve the run pauses after the smoke tests until a reviewer answers
    (`railyard approve|reject VERSION` from another shell, or the Prefect UI).
    """
    settings = command_settings(store=True)
    from infra.rollout.deploy import refuse_taken_local_ports
    from railyard.kinds.registry import load_kind

    # A model kind that does not resolve, or bad settings of it, refuse the run at once (the flow
    # checks them too, for a deployment's run).
    load_kind(settings.model_kind)
    # The run needs its serving ports and its online store: refuse a taken port set, or start the
    # store, at once, before Prefect and the flow start (the flow checks the serving ports too).
    # The store loads its data (25M ratings' features: 12 s) while the flow loads and validates
    # the ratings; the skew check waits for it to answer.
    refuse_taken_local_ports(settings)
    if settings.online_store_url is None:
        from infra.online_store import valkey_process

        valkey_process.ensure_valkey(settings, answering=False)
    from flows.retrain import retrain

    parameters = {"data_dir": str(data.resolve()) if data else None, "epochs": epochs}
    with _run_log(settings.home / "logs", settings.keep_run_dirs):
        summary = retrain(**{k: v for k, v in parameters.items() if v is not None}, auto_approve=auto_approve)
    if as_json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    else:
        _print_summary(summary)


class _UntilFailure(logging.Filter):
    """Passes a run's log records to the terminal until its first failure (an error or a
    traceback): from then on they go to the run's log file only, and the CLI's ``error:`` and
    ``next:`` lines say what happened and where that file is."""

    failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        self.failed = self.failed or record.levelno >= logging.ERROR or record.exc_info is not None
        return not self.failed


@contextmanager
def _run_log(folder: Path, keep: int) -> Iterator[Path]:
    """Every log record of the run, tracebacks included, in a new file under ``folder`` (the
    newest ``keep`` are kept); without --debug the terminal shows them only until a failure."""
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
    to_file = logging.FileHandler(path, encoding="utf-8")
    for old in sorted(folder.glob("run-*.log"))[:-keep]:  # this run's is the newest
        old.unlink(missing_ok=True)
    to_file.setFormatter(
        PrefectFormatter(
            "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
            flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
            task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s",
        )
    )
    root = logging.getLogger()
    consoles = [handler for handler in root.handlers if isinstance(handler, PrefectConsoleHandler)]
    until_failure = _UntilFailure()
    root.addHandler(to_file)
    if not OPTIONS["debug"]:
        for console in consoles:
            console.addFilter(until_failure)
    OPTIONS["run_log"] = path
    try:
        yield path
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for console in consoles:
            console.removeFilter(until_failure)


def _print_summary(summary: dict) -> None:
    lines = [f"model {summary['model_name']} version {summary['model_version']}: {summary['outcome']}"]
    if summary.get("store_uri"):
        lines.append(f"stored at {summary['store_uri']}")
    if summary.get("metrics"):
        lines.append("holdout: " + ", ".join(f"{name} {value:.4f}" for name, value in summary["metrics"].items()))
    lines.append(f"MLflow run {summary['mlflow_run_id']} ({summary['mlflow_tracking_uri']})")
    lines.append(f"data fingerprint {summary['data_fingerprint'][:16]}…")
    if summary.get("serving"):
        lines.append(f"serving labels: {summary['serving']['labels']} at {summary['serving']['rest']}")
    if summary.get("curl"):
        lines.append(f"try it: {summary['curl']}")
    typer.echo("\n".join(lines))


REPO_ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "railyard"


def _prefect(*args: str, check: bool = True):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO_ROOT, check=check)


@app.command(rich_help_panel=PANEL)
def deploy() -> None:
    """Register the deployments of prefect.yaml (daily retrain, promote, rollback) with the Prefect API."""
    command_settings()
    if "PREFECT_API_URL" not in os.environ:
        fail(
            "PREFECT_API_URL is not set: deployments need a Prefect server, not the ephemeral API",
            "start a Prefect server (`prefect server start`), set PREFECT_API_URL to its API, then deploy again",
            code=2,
        )
    if _prefect("work-pool", "inspect", WORK_POOL, check=False).returncode != 0:
        _prefect("work-pool", "create", WORK_POOL, "--type", "process")
    _prefect("--no-prompt", "deploy", "--all")


@app.command(rich_help_panel=PANEL)
def worker(
    run_once: Annotated[bool, typer.Option("--run-once", help="Exit after the runs scheduled now.")] = False,
) -> None:
    """Start a process worker on the `railyard` work pool (runs scheduled and UI-started flow runs).

    One SIGTERM or Ctrl-C stops it and the runs it started: each run concludes its release as
    interrupted (docs/release.md) within RAILYARD_WORKER_STOP_GRACE_S, then whatever still runs is killed.
    """
    settings = command_settings(store=True)
    from railyard.processes import run_supervised

    args = ["worker", "start", "--pool", WORK_POOL, "--type", "process"] + (["--run-once"] if run_once else [])
    command = [sys.executable, "-m", "prefect", *args]
    raise typer.Exit(run_supervised(command, grace_s=settings.worker_stop_grace_s, cwd=REPO_ROOT))


# -- the whole platform on this machine ------------------------------------------------------
