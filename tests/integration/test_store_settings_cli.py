"""A model store setting that cannot work is a refusal with its own next step, through the real
CLI against a real home (MLflow on SQLite, local model stores): a URI that names no store, and a
store that does not belong to the tracking database."""

import pytest

from cli.main import main
from model_registry.stages import Stage
from railyard.settings import Settings
from release.state import registry


def _railyard(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as ended:
        main(list(args))
    return ended.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("uri", "cause"),
    [
        ("s3://BAD_bucket!/p", "invalid S3 bucket name 'BAD_bucket!'"),
        ("file://otherhost/x", "names host 'otherhost'"),
        ("http://example.com/models", "unsupported store URI 'http://example.com/models' (scheme 'http')"),
    ],
)
@pytest.mark.parametrize("command", [("status",), ("run", "--auto-approve"), ("rollback",)])
def test_a_bad_store_uri_is_refused_before_anything_runs(railyard_home, monkeypatch, capsys, uri, cause, command):
    monkeypatch.setenv("RAILYARD_STORE_URI", uri)
    code, err = _railyard(capsys, *command)
    error, next_step = err.strip().splitlines()[-2:]
    assert code == 2, err
    assert error.startswith("error: ") and cause in error
    assert next_step.startswith("next: ") and "RAILYARD_STORE_URI" in next_step and "--debug" not in next_step
    assert not (railyard_home / "mlflow.db").exists()  # nothing ran


def test_a_store_holding_none_of_mlflows_versions_is_named_with_the_tracking_database(
    railyard_home, monkeypatch, capsys
):
    stages = registry(Settings())  # versions 1 and 2 through the home's store
    run = stages.client.create_run(stages.client.create_experiment("mismatch")).info.run_id
    for version in (1, 2):
        stages.register(version, f"file:///store/{version}", run, lineage={}, description="")
    stages.transition(1, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)
    stages.transition(1, Stage.PRODUCTION, actor="alice", reason="good")

    other = railyard_home.parent / "other-store"  # a store of another world, or a new empty one
    monkeypatch.setenv("RAILYARD_STORE_URI", other.as_uri())
    code, err = _railyard(capsys, "status")
    error, next_step = err.strip().splitlines()[-2:]
    assert code == 2, err
    tracking = f"sqlite:///{railyard_home / 'mlflow.db'}"
    assert other.as_uri() in error and tracking in error and "versions 1, 2" in error
    assert "do not belong together" in error
    assert "RAILYARD_STORE_URI" in next_step and "RAILYARD_MLFLOW_TRACKING_URI" in next_step
    assert registry(Settings()).stage(1) is Stage.PRODUCTION  # nothing changed

    monkeypatch.delenv("RAILYARD_STORE_URI")  # the store they belong to: all is well again
    code, err = _railyard(capsys, "status")
    assert code == 0, err
