"""MLflow bookkeeping for a retraining run, through ``MlflowClient`` with explicit run ids.

Explicit run ids (not ``mlflow.start_run``'s thread-local active run) keep logging correct when
Prefect runs tasks in worker threads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from railyard.settings import Settings


def client(settings: Settings):
    from mlflow.tracking import MlflowClient

    settings.home.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=settings.resolved_tracking_uri, registry_uri=settings.resolved_tracking_uri)


def ensure_experiment(settings: Settings) -> str:
    """Experiment id; a new experiment keeps its artifacts under the state folder, not ./mlruns."""
    mlflow_client = client(settings)
    experiment = mlflow_client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow_client.create_experiment(
        settings.mlflow_experiment, artifact_location=settings.mlflow_artifacts_dir.as_uri()
    )


def start_run(settings: Settings, run_name: str, tags: dict[str, str]) -> str:
    run = client(settings).create_run(ensure_experiment(settings), run_name=run_name, tags=tags)
    return run.info.run_id


def log_params(settings: Settings, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    client(settings).log_batch(run_id, params=[Param(str(k), str(v)) for k, v in params.items()])


def log_metrics(settings: Settings, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client(settings).log_batch(
        run_id, metrics=[Metric(str(k), float(v), now, step) for k, v in metrics.items()]
    )


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

