"""The reads `railyard status` makes of MLflow: from a SQLite database of the known schema they
answer exactly what MlflowClient answers, on one real database; any other database is read
through MlflowClient."""

import math
import sqlite3
import time

import pytest

from railyard.mlflow_reads import SCHEMA, ClientReads, SqliteReads, open_reads
from railyard.tracking import mlflow_client

MODEL = "recmodel"


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    """One MLflow database with what the reads meet: versions with tags, one without a run, a
    deleted one, aliases, another model; active, RUNNING, deleted and nameless runs; metrics
    over steps, a NaN."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    client = mlflow_client(f"sqlite:///{path}")
    experiment = client.create_experiment("recmodel-retrain")
    client.create_experiment("other")
    runs = []
    for index in range(4):
        run = client.create_run(experiment, run_name=f"run-{index}", tags={"railyard.process": f'{{"pid": {index}}}'})
        runs.append(run.info.run_id)
        time.sleep(0.01)  # distinct start times
    client.log_metric(runs[0], "auc", 0.7, step=0)
    client.log_metric(runs[0], "auc", 0.8, step=2)
    client.log_metric(runs[0], "auc", 0.75, step=1)
    client.log_metric(runs[0], "logloss", math.nan)
    client.set_terminated(runs[0], "FINISHED")
    client.set_terminated(runs[1], "FAILED")
    client.delete_run(runs[3])  # RUNNING, but deleted: MLflow's active searches skip it
    client.create_run(client.create_experiment("nameless")).info.run_id
    for name in (MODEL, "other"):
        client.create_registered_model(name)
    for version in range(1, 5):
        run_id = runs[version - 1] if version != 2 else None
        client.create_model_version(
            MODEL,
            source=f"file:///store/{version}",
            run_id=run_id,
            tags={"railyard.stage": "candidate", "n": str(version)},
        )
    client.create_model_version("other", source="file:///other/1", tags={"railyard.stage": "production"})
    client.set_model_version_tag(MODEL, "1", "railyard.transition.0000", '{"stage": "candidate"}')
    client.delete_model_version_tag(MODEL, "3", "n")
    client.delete_model_version(MODEL, "4")
    client.set_registered_model_alias(MODEL, "production", "1")
    client.set_registered_model_alias(MODEL, "staging", "3")
    client.set_registered_model_alias("other", "production", "1")
    return path, client, runs


def _both(database):
    path, client, _ = database
    fast = open_reads(f"sqlite:///{path}", lambda: client)
    assert isinstance(fast, SqliteReads)
    return fast, ClientReads(lambda: client)


def test_the_known_schema_is_the_one_the_installed_mlflow_creates(database):
    path, _, _ = database
    assert sqlite3.connect(path).execute("SELECT version_num FROM alembic_version").fetchall() == [(SCHEMA,)]


def test_sqlite_reads_answer_what_mlflow_answers(database):
    fast, slow = _both(database)
    _, _, runs = database
    for model in (MODEL, "other", "never-registered"):
        assert sorted(fast.model_versions(model)) == sorted(slow.model_versions(model))
        assert fast.aliases(model) == slow.aliases(model)
    assert [v for v, _, _ in sorted(fast.model_versions(MODEL))] == [1, 2, 3]  # 4 was deleted
    asked = [*runs, "0" * 32]
    assert fast.known_runs(asked) == slow.known_runs(asked) == set(runs)  # a deleted run is still known
    for run_id in runs:
        fast_metrics, slow_metrics = fast.run_metrics(run_id), slow.run_metrics(run_id)
        assert fast_metrics.keys() == slow_metrics.keys()
        assert all(fast_metrics[k] == slow_metrics[k] or math.isnan(slow_metrics[k]) for k in slow_metrics)
    assert fast.run_metrics(runs[0])["auc"] == 0.8 and math.isnan(fast.run_metrics(runs[0])["logloss"])
    for experiment in ("recmodel-retrain", "other", "nameless", "missing"):
        for arguments in ({}, {"running": True}, {"limit": 1}):
            assert fast.runs(experiment, **arguments) == slow.runs(experiment, **arguments), (experiment, arguments)
    assert [run["name"] for run in fast.runs("recmodel-retrain", running=True)] == ["run-2"]


def test_a_run_mlflow_does_not_have_fails_as_mlflow_fails(database):
    from mlflow.exceptions import MlflowException

    fast, _ = _both(database)
    with pytest.raises(MlflowException, match="not found"):
        fast.run_metrics("0" * 32)


def test_any_other_database_is_read_through_mlflow(database, tmp_path, monkeypatch):
    path, client, _ = database
    other = tmp_path / "older.db"
    other.write_bytes(path.read_bytes())
    sqlite3.connect(other, isolation_level=None).execute("UPDATE alembic_version SET version_num = 'older'")
    for uri in (
        f"sqlite:///{other}",
        f"sqlite:///{tmp_path / 'not-yet.db'}",
        "postgresql://db/mlflow",
        "http://mlflow:5000",
    ):
        assert isinstance(open_reads(uri, lambda: client), ClientReads), uri
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert isinstance(open_reads(f"sqlite:///{path}", lambda: client), ClientReads)
