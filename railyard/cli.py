"""The ``railyard`` command line.

Heavy libraries (TensorFlow, Great Expectations, MLflow, Prefect) are imported inside the
commands that need them, so ``railyard --help`` answers at once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="railyard",
    help="Railyard: daily TensorFlow retraining shipped safely to TensorFlow Serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def prepare_environment(home: Path) -> None:
    """Quiet, offline-friendly defaults; must run before Prefect or TensorFlow is imported.

    Prefect's own state goes under RAILYARD_HOME too (a separate world per home), unless the user
    points Prefect somewhere (PREFECT_HOME or PREFECT_API_URL).
    """
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    # Prefect and Great Expectations write scratch files under TMPDIR.
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TMPDIR", str(tmp))
    defaults = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # telemetry fails without internet
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # first start migrates the DB
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command("generate-data")
def generate_data(
    out: Annotated[Path, typer.Option(help="Output folder (ratings.csv + movies.csv).")],
    users: Annotated[int, typer.Option(min=1)] = 600,
    movies: Annotated[int, typer.Option(min=1)] = 1500,
    days: Annotated[int, typer.Option(min=1)] = 30,
    ratings_per_day: Annotated[int, typer.Option(min=1)] = 3000,
    seed: int = 7,
    fmt: Annotated[str, typer.Option("--format", help="csv, or parquet (date=YYYY-MM-DD partitions)")] = "csv",
) -> None:
    """Generate a synthetic MovieLens-format data set with learnable structure."""
    from railyard.synthetic import generate_movielens

    if fmt not in ("csv", "parquet"):
        _fail(f"--format must be csv or parquet, not {fmt!r}")
    try:
        summary = generate_movielens(
            out, users=users, movies=movies, days=days, ratings_per_day=ratings_per_day, seed=seed, fmt=fmt
        )
    except (FileExistsError, ValueError) as error:
        _fail(str(error))
    typer.echo(
        f"wrote {summary.n_ratings:,} ratings ({summary.n_users:,} users, {summary.n_movies:,} movies, "
        f"positive rate {summary.positive_rate:.2f}) to {summary.out_dir}"
    )


@app.command()
def run(
    data: Annotated[Path | None, typer.Option("--data", help="MovieLens-format folder or date-partitioned Parquet.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Maximum training epochs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON line at the end.")] = False,
) -> None:
    """Run the daily retraining flow once, now (generates a small data set on first use)."""
    from railyard.settings import Settings

    settings = Settings()
    prepare_environment(settings.home)
    from flows.retrain import ModelRejected, retrain
    from railyard.loaders import DataLoadError
    from railyard.validation import DataValidationError

    try:
        summary = retrain(data_dir=str(data.resolve()) if data else None, epochs=epochs)
    except (DataLoadError, DataValidationError, ModelRejected) as error:
        _fail(str(error), code=2)
    if as_json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    else:
        _print_summary(summary)


def _print_summary(summary: dict) -> None:
    metrics = summary["metrics"]
    lines = [
        f"model {summary['model_name']} version {summary['model_version']} published to {summary['store_uri']}",
        "holdout: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()),
        f"MLflow run {summary['mlflow_run_id']} ({summary['mlflow_tracking_uri']})",
        f"data fingerprint {summary['data_fingerprint'][:16]}…",
    ]
    typer.echo("\n".join(lines))

