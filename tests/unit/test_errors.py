"""One error hierarchy: what each error means for the user (exit code, next step), and the CLI
reading it from the error rather than from a list of class names."""

import pytest

import flows.rollback
from cli.main import main
from flows.rollback import RollbackRefused
from infra.docker_launcher import DockerEngineUnavailable, LauncherError
from infra.local_server.background import LocalServerError
from infra.tfserving.client import ModelLoadError, ServingError, ServingUnavailableError
from infra.tfserving.model_config import ConfigFileError
from model_registry import IntegrityError, LockTimeoutError, ProtectedVersionError, StoreError, VersionNotFoundError
from model_registry.stages import IllegalTransition, RegistryOutOfSync
from railyard import errors
from railyard.errors import ModelRejected, PortTaken, RailyardError, Refused, SmokeTestsFailed
from railyard.loaders import DataLoadError
from railyard.validation import DataValidationError
from release.reconcile import RegistryLost

REFUSED = [DataLoadError, ModelRejected, SmokeTestsFailed, IllegalTransition, RegistryOutOfSync, RegistryLost,
           RollbackRefused, VersionNotFoundError, ProtectedVersionError, IntegrityError, LauncherError,
           PortTaken]  # fmt: skip
OUTAGES = [ServingError, ServingUnavailableError, ModelLoadError, LocalServerError, StoreError, LockTimeoutError,
           DockerEngineUnavailable, ConfigFileError]  # fmt: skip


@pytest.mark.parametrize("kind", REFUSED)
def test_refusals_share_the_refused_branch_and_exit_2(kind):
    assert issubclass(kind, Refused) and kind.exit_code == 2


@pytest.mark.parametrize("kind", OUTAGES)
def test_outages_and_breakage_exit_1(kind):
    assert issubclass(kind, RailyardError) and not issubclass(kind, Refused) and kind.exit_code == 1


def test_errors_that_callers_catch_as_value_errors_still_are():
    assert issubclass(DataLoadError, ValueError) and issubclass(IllegalTransition, ValueError)
    assert issubclass(ConfigFileError, ValueError)
    assert issubclass(DataValidationError, Refused)


def test_next_steps_come_from_the_error():
    assert "restore-registry" in errors.next_step(RegistryLost("lost"))
    assert "serving is back" in errors.next_step(ServingUnavailableError("down"))
    assert errors.next_step(KeyError("x")) == errors.DEFAULT_NEXT_STEP
    assert errors.next_step(None) == errors.DEFAULT_NEXT_STEP


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (ServingUnavailableError("TF Serving at gRPC 127.0.0.1:8500 is unavailable after 5 attempt(s)"), 1),
        (IllegalTransition("version 3 was never in production"), 2),
    ],
)
def test_the_cli_exits_with_the_errors_code_on_one_error_line(railyard_home, monkeypatch, capsys, failure, code):
    def failing_rollback(**_):
        raise failure

    monkeypatch.setattr(flows.rollback, "rollback", failing_rollback)
    with pytest.raises(SystemExit) as ended:
        main(["rollback"])
    assert ended.value.code == code
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"error: {failure}"
    assert err.splitlines()[1] == f"next: {failure.next_step}"
    assert "Traceback" not in err


def test_a_bad_setting_is_one_sentence_naming_its_variable(railyard_home, monkeypatch, capsys):
    monkeypatch.setenv("RAILYARD_MODEL_NAME", "../escape")
    monkeypatch.setenv("RAILYARD_WEBHOOK_URL", "https://hooks.example.com/secret-token")
    monkeypatch.setenv("RAILYARD_EPOCHS", "many")
    with pytest.raises(SystemExit) as ended:
        main(["status"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    first, second = err.splitlines()
    assert first.startswith("error: RAILYARD_MODEL_NAME: invalid model name") and "RAILYARD_EPOCHS:" in first
    assert second.startswith("next: fix the RAILYARD_* variable")
    assert "secret-token" not in err and "Traceback" not in err


def test_an_unexpected_failure_is_one_line_and_debug_shows_the_traceback(railyard_home, monkeypatch, capsys):
    def broken(**_):
        raise RuntimeError("the server closed the connection\n(and a second line of detail)")

    monkeypatch.setattr(flows.rollback, "rollback", broken)
    with pytest.raises(SystemExit) as ended:
        main(["rollback"])
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: RuntimeError: the server closed the connection",
        "next: run again with --debug for the traceback",
    ]

    with pytest.raises(SystemExit):
        main(["--debug", "rollback"])
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.rstrip().endswith("--debug for the traceback")
