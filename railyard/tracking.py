"""MLflow bookkeeping for a retraining run, through ``MlflowClient`` with explicit run ids.

Explicit run ids (not ``mlflow.start_run``'s thread-local active run) keep logging correct when
Prefect runs tasks in worker threads.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from railyard.mlflow_reads import MlflowReads, open_reads
from railyard.processes import current_process
from railyard.settings import Settings

# The experiment's kind. Earlier MLflow 3 UIs opened it on its training runs for this tag; 3.17's
# follows the browser's choice in its sidebar (or a link's `workflowType=machine_learning`) instead.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PROCESS_TAG = "railyard.process"  # which process runs it: a run left RUNNING by a killed one is found
FAILURE_TAG = "railyard.failure"
_TAG_LIMIT = 5_000  # MLflow caps run tag values at 8,000 characters
_READY_DATABASES: set[str] = set()  # the SQLite URIs this process saw created and migrated


def mlflow_client(uri: str):
    """A client for tracking and registry at ``uri``.

    A SQLite database is created (or migrated) by one process at a time: MLflow's migrations
    fail when two processes run them on one new file, as a run and a reviewer's ``railyard
    status`` do when they open a fresh home together.
    """
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///") or uri in _READY_DATABASES:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    database = Path(uri.removeprefix("sqlite:///"))
    with open(database.with_name(f"{database.name}.create-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        mlflow_client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # creates the tracking tables
        mlflow_client.search_registered_models(max_results=1)  # and the registry's
    _READY_DATABASES.add(uri)
    return mlflow_client


def client(settings: Settings):
    settings.home.mkdir(parents=True, exist_ok=True)
    return mlflow_client(settings.resolved_tracking_uri)


def ensure_experiment(settings: Settings) -> str:
    """Experiment id; a new experiment keeps its artifacts under the state folder, not ./mlruns."""
    mlflow_client = client(settings)
    experiment = mlflow_client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        for key, value in EXPERIMENT_KIND.items():
            if key not in experiment.tags:  # an experiment made before Railyard set it
                mlflow_client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    return mlflow_client.create_experiment(
        settings.mlflow_experiment, artifact_location=settings.mlflow_artifacts_dir.as_uri(), tags=EXPERIMENT_KIND
    )


def start_run(settings: Settings, run_name: str, tags: dict[str, str]) -> str:
    tags = tags | {PROCESS_TAG: json.dumps(current_process())}
    run = client(settings).create_run(ensure_experiment(settings), run_name=run_name, tags=tags)
    return run.info.run_id


@contextmanager
def mlflow_run(settings: Settings, run_name: str, tags: dict[str, str], *, finished_on: tuple = ()) -> Iterator[str]:
    """An MLflow run that ends FINISHED, or FAILED with its cause in a tag when the block raises
    (``finished_on``: exceptions that end a run that worked, e.g. a model the gate refused).

    A failure to end the run (a full disk, a lost database) never hides the block's own error.
    """
    run_id = start_run(settings, run_name, tags)
    try:
        yield run_id
    except finished_on:
        end_run(settings, run_id, failed=False)
        raise
    except BaseException as error:
        try:
            fail_run(settings, run_id, f"{type(error).__name__}: {error}")
        except Exception as ending:  # noqa: BLE001 - the block's error is the one to report
            error.add_note(f"the MLflow run {run_id} could not be ended FAILED either: {ending}")
        raise
    end_run(settings, run_id, failed=False)


def rename_run(settings: Settings, run_id: str, name: str) -> None:
    """Name the run after what it produced (e.g. ``recmodel-v3``)."""
    client(settings).update_run(run_id, name=name)


def fail_run(settings: Settings, run_id: str, cause: str) -> None:
    set_tags(settings, run_id, {FAILURE_TAG: cause[:_TAG_LIMIT]})
    end_run(settings, run_id, failed=True)


def reads(settings: Settings) -> MlflowReads:
    """The reads `railyard status` makes, without MLflow's import where the database allows."""
    return open_reads(settings.resolved_tracking_uri, lambda: client(settings))


def running_runs(settings: Settings) -> list[dict]:
    """The experiment's runs still marked RUNNING: each ``{"run_id", "name", "tags"}``."""
    return reads(settings).runs(settings.mlflow_experiment, running=True)


def last_run(settings: Settings) -> dict | None:
    """The experiment's newest run: its id, name and tags (None: no run yet)."""
    runs = reads(settings).runs(settings.mlflow_experiment, limit=1)
    return runs[0] if runs else None


def run_metrics(settings: Settings, run_id: str, prefix: str = "") -> dict[str, float]:
    """A run's latest metrics whose names start with ``prefix`` (without it)."""
    metrics = client(settings).get_run(run_id).data.metrics
    return {name.removeprefix(prefix): value for name, value in metrics.items() if name.startswith(prefix)}


def log_params(settings: Settings, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    client(settings).log_batch(run_id, params=[Param(str(k), str(v)) for k, v in params.items()])


def log_metrics(settings: Settings, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client(settings).log_batch(run_id, metrics=[Metric(str(k), float(v), now, step) for k, v in metrics.items()])


def log_dict(settings: Settings, run_id: str, data: dict, artifact_file: str) -> None:
    client(settings).log_text(run_id, json.dumps(data, indent=2, default=str), artifact_file)


def log_artifact(settings: Settings, run_id: str, path: Path, artifact_path: str | None = None) -> None:
    path = Path(path)
    if path.is_dir():
        client(settings).log_artifacts(run_id, str(path), artifact_path)
    else:
        client(settings).log_artifact(run_id, str(path), artifact_path)


def set_tags(settings: Settings, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client(settings).log_batch(run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])


def end_run(settings: Settings, run_id: str, *, failed: bool) -> None:
    client(settings).set_terminated(run_id, status="FAILED" if failed else "FINISHED")
