"""The operator's quick commands against a real home (versions published to the local model
store and registered in MLflow through the registry's own code): in a fresh interpreter they
import no TensorFlow and print none of its start-up lines; every refusal says what to do next.
`status` on a settled home imports no MLflow either, and still concludes what needs MLflow."""

import json
import os
import subprocess
import sys
import time

import pytest

from bench.bench_commands import register_versions
from cli.main import main
from model_registry.history import ENTRY_FIELDS
from model_registry.stages import Stage
from railyard import tracking
from railyard.errors import SEE_STATUS
from railyard.processes import current_process, describe
from railyard.settings import Settings
from railyard.tracking import mlflow_client
from release.state import model_store, registry
from tests.support import REPO_ROOT
from tests.support.stores import make_saved_model

HEAVY = ("tensorflow", "keras", "great_expectations")
TENSORFLOW_NOISE = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit")
# Runs the command's code path as `railyard` does, then reports what it imported.
PROBE = """
import atexit, json, sys
atexit.register(lambda: print("imported: " + json.dumps(sorted(m for m in sys.modules if "." not in m))))
from cli.main import main
main(sys.argv[1:])
"""


@pytest.fixture
def versions(railyard_home, tmp_path):
    """Three published, registered versions: 1 and 2 rejected after their smoke tests, 3 in
    staging with no retrain run waiting for it."""
    return register_versions(Settings(), make_saved_model(tmp_path / "export", seed=1), 3)


def _imports(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("imported: ")]
    return done, set(json.loads(line.removeprefix("imported: ")))


@pytest.mark.parametrize(
    ("args", "code", "also_not"),
    [
        # Prefect's client (a second and a half to import) only where a review can be answered;
        # MLflow's (1.8 s) only where status must change something (railyard/mlflow_reads.py),
        # the online store's client only when the store runs (here it does not).
        (["status"], 0, ("mlflow", "prefect", "redis")),
        (["status", "--json"], 0, ("mlflow", "prefect", "redis")),
        (["approve", "3"], 2, ("prefect",)),
        (["reject", "3"], 2, ("prefect",)),
        (["reject", "1", "--comment", "worse"], 2, ("prefect",)),
        (["serve", "--stop"], 0, ("mlflow", "prefect")),
        (["online-store", "status"], 0, ("mlflow", "prefect")),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_quick_commands_import_no_tensorflow_nor_what_they_do_not_need(versions, args, code, also_not):
    done, imported = _imports(*args)
    assert done.returncode == code, done.stderr[-3000:]
    assert not imported & {*HEAVY, *also_not}, sorted(imported & {*HEAVY, *also_not})
    assert not any(noise in done.stderr for noise in TENSORFLOW_NOISE), done.stderr


@pytest.mark.parametrize(
    ("args", "error", "next_step"),
    [
        (["reject", "3"], "error: a rejection needs a comment saying why", 'next: nothing changed; e.g. `railyard reject 3 --comment "why"`'),
        (["approve", "1"], "error: recmodel version 1 is rejected (bench: a bench version): there is no review to answer", f"next: {SEE_STATUS}"),
        (["approve", "9"], "error: recmodel version 9 is not registered", f"next: {SEE_STATUS}"),
        (["approve", "3"], "error: recmodel version 3 has no retrain run waiting for a review", f"next: {SEE_STATUS}"),
        (["ingest", "--group", "all"], "error: --group must be online, sink or both, not 'all'", "next: give --group online, sink or both"),
    ],
)  # fmt: skip
def test_every_refusal_says_what_to_do_next(versions, capsys, args, error, next_step):
    with pytest.raises(SystemExit) as ended:
        main(args)
    assert ended.value.code == 2
    assert capsys.readouterr().err.splitlines()[-2:] == [error, next_step]


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(noise in line for noise in TENSORFLOW_NOISE)]


@pytest.mark.parametrize(("level", "quiet"), [(None, True), (0, False)], ids=["default", "asked-for"])
def test_tensorflow_starts_quietly_unless_its_log_lines_are_asked_for(level, quiet):
    """TensorFlow logs while its libraries load, before TF_CPP_MIN_LOG_LEVEL applies: those lines
    go too, and come back at level 0 (what --debug sets)."""
    probe = f"from railyard.runtime import quiet_tensorflow; quiet_tensorflow({level}); import tensorflow as tf; tf.constant(1) + 1"
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (_noise(done.stderr) == []) is quiet, done.stderr


def test_the_local_server_starts_quietly_and_stops_without_tensorflow(versions, railyard_home):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    command = [sys.executable, "-m", "cli"]
    started = subprocess.run(
        [*command, "serve", "--background"], env=env, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        log = (railyard_home / "serving" / "server.log").read_text()
        assert _noise(log) == [], log
        done, imported = _imports("serve", "--stop")
    finally:
        subprocess.run([*command, "serve", "--stop"], env=env, capture_output=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0 and done.stdout.startswith("stopped the local server (pid "), done.stderr
    assert not imported & {*HEAVY, "mlflow", "prefect"}


def _status(*args: str) -> tuple[subprocess.CompletedProcess, bool]:
    """`railyard status` in a fresh interpreter: what it did, and whether it imported MLflow."""
    done, imported = _imports("status", *args)
    return done, "mlflow" in imported


def test_status_still_concludes_what_needs_mlflow(versions, tmp_path, monkeypatch):
    """What status reads without MLflow is what MLflow holds now: a version to register, a log
    record to mirror, a run left RUNNING by a killed process and a replaced database are each
    found (MLflow opened only to act); a version under review shows its run and deadline
    without MLflow."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # unreachable: nothing concluded from it
    settings = Settings()
    stages = registry(settings)
    run = stages.client.create_run(stages.client.create_experiment("x")).info.run_id
    metadata = {"mlflow_run_id": run, "data_fingerprint": "stranded", "code_version": "test"}
    model_store(settings).publish(settings.model_name, tmp_path / "export", metadata=metadata)  # never registered
    # A rejection in the transition log that MLflow's tags lack (killed between the two writes).
    entry = dict.fromkeys(ENTRY_FIELDS) | {"stage": "rejected", "from": "staging", "actor": "carol", "reason": "worse"}
    entry |= {"time": "2026-12-07T03:00:00Z", "version": 3, "smoke_passed": None}
    model_store(settings).append_transition(settings.model_name, entry)
    # A retrain's MLflow run left RUNNING by a process that is gone.
    killed = tracking.start_run(settings, "killed", {})
    gone = current_process() | {"start": current_process()["start"] - 1}
    tracking.set_tags(settings, killed, {tracking.PROCESS_TAG: json.dumps(gone)})

    done, opened_mlflow = _status()
    assert done.returncode == 0 and opened_mlflow, done.stderr[-3000:]
    repaired = [line for line in done.stdout.splitlines() if line.startswith("repaired: ")]
    assert repaired == [
        "repaired: version 4 was published but never registered: registered it as a candidate",
        "repaired: version 3: MLflow lacked transition 2 (rejected by carol): MLflow's history follows the log",
        "repaired: version 3: MLflow said staging, the transition log says rejected: MLflow follows the log",
        "repaired: alias staging pointed at 3, the transition log says None: moved it",
        f"repaired: MLflow run {killed} was still RUNNING: ended it FAILED (interrupted: its process "
        f"({describe(gone)}) is gone)",
    ]

    # Version 4 waits for its review without a process (its run and deadline: MLflow's tags).
    stages.transition(4, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)
    flow_run_id = "00000000-0000-0000-0000-000000000004"
    owner = {"flow_run_id": flow_run_id, "process": None, "mode": "suspend", "deadline": time.time() + 86_400}
    stages.set_release_run(4, owner)
    done, opened_mlflow = _status()  # settled: read without MLflow
    assert done.returncode == 0 and not opened_mlflow, done.stderr[-3000:]
    assert "repaired" not in done.stdout and "v3    rejected    " in done.stdout and "rejected by carol" in done.stdout
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("v4 ")]
    assert "awaiting review since 20" in line and f"flow run {flow_run_id}, deadline 20" in line, line

    mlflow_client(f"sqlite:///{tmp_path / 'fresh.db'}")  # a fresh, empty database where the home's was
    (tmp_path / "fresh.db").replace(settings.home / "mlflow.db")
    done, opened_mlflow = _status()
    assert done.returncode == 2 and not opened_mlflow
    assert "the tracking database was lost or replaced" in done.stderr
    assert "next: restore the MLflow database, or run `railyard restore-registry`" in done.stderr


def test_users_add_reads_the_password_from_stdin_and_refusals_change_nothing(railyard_home, capsys, monkeypatch):
    import io

    from railyard import identity

    def users(*args: str, password: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(password + "\n"))
        with pytest.raises(SystemExit) as ended:
            main(["users", *args])
        said = capsys.readouterr()
        return ended.value.code or 0, said.out, said.err

    assert users("list")[1].strip() == "no users (`railyard users add NAME`)"
    assert users("add", "alice", password="correct horse battery")[:2] == (0, "added user alice\n")
    (stored,) = identity.read_users(railyard_home).values()
    assert identity.password_matches("correct horse battery", stored)
    before = (railyard_home / identity.USERS_FILE).read_text()
    for args, password, said in [
        (("add", "alice"), "another long password", "error: user alice already exists: nothing was changed"),
        (("add", "bob"), "", "error: the password is empty: nothing was changed"),
        (("add", "bob"), "short", "error: the password is too short (at least 10 characters)"),
        (("remove", "carol"), "", "error: there is no user carol: nothing was changed"),
    ]:
        code, _, err = users(*args, password=password)
        assert code == 2 and err.startswith(said) and "\nnext: " in err, err
    assert (railyard_home / identity.USERS_FILE).read_text() == before
    assert users("list")[1].split() == ["alice"]
    assert users("remove", "alice")[0] == 0 and users("list")[1].startswith("no users")
