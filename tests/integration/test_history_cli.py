"""`railyard status --verify-history` against a real home: MLflow (SQLite) and the local model store."""

import json

import pytest

from cli.main import main
from model_registry.stages import Stage
from railyard.settings import Settings
from release.state import registry, release_lock


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


def _forge(stages, version: int, sequence: int, **changes) -> None:
    """What MLflow's UI pencil does to a version tag: the REST set-tag call behind it, through
    MlflowClient on the same tracking database."""
    key = f"railyard.transition.{sequence:04d}"
    entry = json.loads(stages.client.get_model_version(stages.model, str(version)).tags[key])
    stages.client.set_model_version_tag(stages.model, str(version), key, json.dumps(entry | changes))


def _status(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ended:
        main(["status", *args])
    out, err = capsys.readouterr()
    return ended.value.code, out, err


def test_a_forged_approver_is_reported_shown_from_the_log_and_repaired(released, capsys):
    # Version 1 is archived by version 3's promotion: its approver still matters to a reviewer.
    run = released.client.get_model_version(released.model, "1").run_id
    released.register(3, "file:///store/3", run, lineage={}, description="")
    released.transition(3, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)
    released.transition(3, Stage.PRODUCTION, actor="carol", reason="better")
    _forge(released, 1, 2, actor="mallory")  # alice's approval, now mallory's

    code, out, err = _status(capsys, "--verify-history")
    assert code == 2 and "MLflow agrees" not in out
    assert "version 1, transition 2: MLflow says actor 'mallory', the log says 'alice'" in err

    # While a release holds the lock nothing is repaired, and still the log's approver is shown.
    with release_lock(Settings(), "a test holding the release lock"):
        code, out, _ = _status(capsys, "--json")
    status = json.loads(out)
    assert code == 0 and status["repaired"][0].startswith("not reconciled")
    assert {v["version"]: v["approved_by"] for v in status["versions"]} == {1: "alice", 2: None, 3: "carol"}

    code, out, _ = _status(capsys)  # a plain status puts MLflow back in line with the log, and says so
    assert code == 0 and "approved by mallory" not in out and "v1    archived" in out
    assert "repaired: version 1, transition 2: MLflow said actor 'mallory', the log says 'alice'" in out
    assert released.history(1)[2]["actor"] == "alice"
    assert json.loads(released.client.get_model_version(released.model, "1").tags[_key(2)])["actor"] == "alice"
    code, out, _ = _status(capsys, "--verify-history")
    assert code == 0 and "MLflow agrees" in out


def _key(sequence: int) -> str:
    return f"railyard.transition.{sequence:04d}"


@pytest.mark.parametrize(
    ("edit", "reported"),
    [
        (lambda s: _forge(s, 1, 2, stage="archived"), "version 1, transition 2: MLflow says stage 'archived'"),
        (lambda s: _forge(s, 1, 2, time="2026-01-01T00:00:00Z"), "version 1, transition 2: MLflow says time"),
        (lambda s: _forge(s, 2, 1, reason="better"), "version 2, transition 1: MLflow says reason 'better'"),
        (lambda s: _forge(s, 1, 2, flow_run_id="run-7"), "version 1, transition 2: MLflow says flow_run_id 'run-7'"),
        (
            lambda s: s.client.delete_model_version_tag(s.model, "2", _key(1)),
            "version 2: MLflow lacks transition 1 (rejected by bob)",
        ),
        (
            lambda s: s.client.set_model_version_tag(
                s.model, "2", _key(7), json.dumps({"stage": "production", "actor": "alice"})
            ),
            "version 2: MLflow has transition 2 (production by alice), which the log does not",
        ),
        (
            lambda s: s.client.set_registered_model_alias(s.model, "production", "2"),
            "alias production points at 2, the transition log says 1",
        ),
    ],
    ids=["stage", "time", "reason", "run", "removed", "added", "alias"],
)
def test_verify_history_compares_every_field_and_never_agrees_before_a_repair(released, capsys, edit, reported):
    edit(released)
    code, out, err = _status(capsys, "--verify-history")
    assert code == 2 and "MLflow agrees" not in out and reported in err, err

    code, out, _ = _status(capsys)
    assert code == 0 and "repaired: " in out
    code, out, _ = _status(capsys, "--verify-history")
    assert code == 0 and "MLflow agrees" in out
    assert [e["actor"] for e in released.history(1)] == ["railyard", "railyard", "alice"]
