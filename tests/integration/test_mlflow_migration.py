"""A home from before `railyard up` keeps its MLflow data: its SQLite database is moved once into
the embedded PostgreSQL (a real server from the wheel), runs, metrics, registered versions and
aliases included, and new records get new ids."""

import shutil
import tempfile
import time
from pathlib import Path

import pytest

import infra.platform.service as service
from infra.platform import postgres


@pytest.fixture
def server():
    # Not under pytest's temporary folder: as root PostgreSQL runs as another user, who must reach it.
    scratch = Path(tempfile.mkdtemp(prefix="railyard-pg-"))
    folder = scratch / "postgres"
    postgres.prepare(folder)
    port = service.free_port()
    child, _ = service.start_detached(postgres.command(folder, port), scratch / "postgres.log", user=postgres.run_as())
    deadline = time.monotonic() + 60
    while not service.tcp_answers(port):
        assert child.poll() is None and time.monotonic() < deadline, service.log_lines(scratch / "postgres.log")
        time.sleep(0.1)
    postgres.create_databases(folder, port)
    yield scratch, postgres.url(folder, port, "mlflow")
    child.send_signal(2)  # PostgreSQL's fast shutdown
    child.wait(timeout=30)
    shutil.rmtree(scratch, ignore_errors=True)


def test_an_mlflow_sqlite_database_is_migrated_once_with_everything_in_it(server):
    from mlflow.tracking import MlflowClient

    scratch, target = server
    sqlite_path = scratch / "mlflow.db"
    before = MlflowClient(f"sqlite:///{sqlite_path}")
    experiment = before.create_experiment("railyard", artifact_location=str(scratch / "artifacts"))
    run = before.create_run(experiment)
    before.log_metric(run.info.run_id, "auc", 0.74)
    before.log_param(run.info.run_id, "epochs", "8")
    before.set_terminated(run.info.run_id)
    before.create_registered_model("recmodel")
    version = before.create_model_version("recmodel", "file:///store/recmodel/1", run_id=run.info.run_id)
    before.set_registered_model_alias("recmodel", "production", version.version)
    before.set_model_version_tag("recmodel", version.version, "railyard.stage", "production")

    copied = postgres.migrate_mlflow(sqlite_path, target)
    assert copied["runs"] == 1 and copied["model_versions"] == 1 and copied["registered_model_aliases"] == 1
    assert not sqlite_path.exists() and (scratch / f"mlflow.db{postgres.MIGRATED_SUFFIX}").exists()

    after = MlflowClient(target)
    moved = after.get_run(run.info.run_id)
    assert moved.data.metrics == {"auc": 0.74} and moved.data.params == {"epochs": "8"}
    assert after.get_experiment_by_name("railyard").experiment_id == experiment
    production = after.get_model_version_by_alias("recmodel", "production")
    assert (str(production.version), production.tags) == ("1", {"railyard.stage": "production"})
    assert int(after.create_experiment("next")) > int(experiment)  # ids go on after the copied ones
    assert str(after.create_model_version("recmodel", "file:///store/recmodel/2").version) == "2"

    with pytest.raises(postgres.PostgresError, match="already holds tables"):  # never twice into one database
        MlflowClient(f"sqlite:///{scratch / 'other.db'}").create_experiment("again")
        postgres.migrate_mlflow(scratch / "other.db", target)
    assert (scratch / "other.db").exists()  # refused: left as it was
