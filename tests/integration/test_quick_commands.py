"""The operator's quick commands against a real home (versions published to the local model
store and registered in MLflow through the registry's own code): in a fresh interpreter they
import no TensorFlow and print none of its start-up lines; every refusal says what to do next."""

import json
import os
import subprocess
import sys

import pytest

from bench.bench_commands import register_versions
from cli.main import main
from railyard.errors import SEE_STATUS
from railyard.settings import Settings
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
        # Prefect's client (a second and a half to import) only where a review can be answered.
        (["status"], 0, ("prefect",)),
        (["status", "--json"], 0, ("prefect",)),
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
