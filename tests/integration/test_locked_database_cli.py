"""A locked MLflow database under the real CLI (a real SQLite lock held by another connection, as
a long write by another process holds it): one error line naming the file, one next step."""

import sqlite3

import pytest

from cli.main import main
from model_registry.stages import Stage
from railyard.settings import Settings
from release.state import registry


def test_a_locked_mlflow_database_is_named_with_what_to_do(railyard_home, capsys):
    stages = registry(Settings())
    run = stages.client.create_run(stages.client.create_experiment("locked")).info.run_id
    stages.register(1, "file:///store/1", run, lineage={}, description="")
    stages.transition(1, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)
    database = railyard_home / "mlflow.db"

    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # what another process's long write holds
    try:
        with pytest.raises(SystemExit) as ended:
            main(["status"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    error, next_step = err.strip().splitlines()[-2:]
    assert ended.value.code == 1
    assert error.startswith(f"error: MLflow's database {database} is locked by another process"), err
    assert next_step.startswith("next: ") and f"fuser {database}" in next_step and "--debug" not in next_step
