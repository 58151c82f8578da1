"""`railyard status --verify-history` against a real home: MLflow (SQLite) and the local model store."""

import pytest

from cli.main import main
from model_registry.stages import Stage
from railyard.settings import Settings
from tasks.release import registry


@pytest.fixture
def released(railyard_home):
    """Version 1 in production, version 2 rejected, both through the transition log."""
    stages = registry(Settings())
    run = stages.client.create_run(stages.client.create_experiment("history")).info.run_id
    for version in (1, 2):
        stages.register(version, f"file:///store/{version}", run, lineage={}, description="")
    stages.transition(1, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)
    stages.transition(1, Stage.PRODUCTION, actor="alice", reason="good")
    stages.transition(2, Stage.REJECTED, actor="bob", reason="worse")
    return stages


def test_an_intact_history_verifies(released, capsys):
    with pytest.raises(SystemExit) as ended:
        main(["status", "--verify-history"])
    assert ended.value.code == 0
    assert "transition log verified: 5 records, hash chain intact, MLflow agrees" in capsys.readouterr().out


def test_an_edited_mlflow_tag_is_reported_with_exit_2(released, capsys):
    released.client.set_model_version_tag(released.model, "2", "railyard.stage", "archived")
    with pytest.raises(SystemExit) as ended:
        main(["status", "--verify-history"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: MLflow disagrees with the transition log: version 2: the log says rejected")

    with pytest.raises(SystemExit) as ended:  # a plain status puts MLflow back in line, and says so
        main(["status"])
    assert ended.value.code == 0
    assert "repaired: version 2: MLflow said archived, the transition log says rejected" in capsys.readouterr().out
    assert released.stage(2) is Stage.REJECTED


def test_a_tampered_log_record_is_named_with_exit_2(released, railyard_home, capsys):
    record = sorted((railyard_home / "store" / "recmodel" / ".railyard-history").glob("*.json"))[
        3
    ]  # alice promotes version 1
    edited = record.read_bytes().replace(b"alice", b"mallory")
    assert edited != record.read_bytes()
    record.write_bytes(edited)
    with pytest.raises(SystemExit) as ended:
        main(["status", "--verify-history"])
    assert ended.value.code == 2
    assert "record 4 does not follow record 3 (edited or replaced)" in capsys.readouterr().err
