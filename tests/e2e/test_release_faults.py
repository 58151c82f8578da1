"""Releases under faults, through the real CLI, a real Prefect server and the local TF Serving:
a run killed while it waits for its review, a newer model while one awaits review, a run killed
between publication and registration, a serving port set and taken by someone else, TF Serving's
ports held by another home, two runs at once on one home, and a lost MLflow database. Each ends recorded, announced and consistent.
"""

import json
import os
import sqlite3
from pathlib import Path

import pytest

from infra.tfserving.protocol import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from model_registry import open_store
from tests.support.ports import held
from tests.support.release_world import MODEL, World, assert_serves_its_golden_answers, kill

pytestmark = pytest.mark.slow
PORT_SETTINGS = ("RAILYARD_LOCAL_SERVING_REST_PORT", "RAILYARD_LOCAL_SERVING_GRPC_PORT")


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_server):
    world = World(tmp_path_factory.mktemp("faults"), prefect_server)
    world.finish(world.start_run(1, "--auto-approve"))  # version 1 in production
    yield world
    world.stop_services()


def test_a_run_killed_while_awaiting_approval_is_rejected_as_crashed_and_announced(world, webhook):
    run = world.start_run(2)
    flow_run = world.wait_until_waiting(2, run)
    assert world.served_versions() == {1, 2}
    kill(run)

    status = world.status(env={"RAILYARD_WEBHOOK_URL": os.environ["RAILYARD_WEBHOOK_URL"]})
    assert any(line.startswith("version 2 was rejected: crashed:") for line in status["repaired"]), status
    assert status["serving"] == {"stable": 1, "canary": 1} and world.served_versions() == {1}  # canary unloaded
    rejected = world.history(2)[-1]
    assert (rejected["stage"], rejected["actor"]) == ("rejected", "railyard")
    assert rejected["reason"].startswith("crashed:") and "is gone" in rejected["reason"]
    assert [(m["event"], m["version"], m["ending"]) for m in webhook] == [("rejected", 2, "crashed")]
    assert (
        world.mlflow().get_run(world.tags(2)["railyard.mlflow_run_id"]).data.tags["railyard.release_ended"] == "crashed"
    )
    # Its Resume form is gone: the run that can never resume is failed, saying why.
    state = world.flow_run(flow_run["id"])["state"]
    assert state["type"] == "FAILED" and "rejected (crashed" in state["message"]
    assert world.status()["repaired"] == []  # concluded once
    assert_serves_its_golden_answers(world, "stable", 1)


def test_a_newer_model_supersedes_a_version_still_awaiting_review(world):
    waiting = world.start_run(3)
    world.wait_until_waiting(3, waiting)
    newer = world.finish(world.start_run(4, "--auto-approve"))
    assert (newer["model_version"], newer["stage"]) == (4, "production")

    superseded = world.finish(waiting)  # the waiting run was answered by Railyard and ended
    assert (superseded["model_version"], superseded["stage"], superseded["decided_by"]) == (3, "rejected", "railyard")
    assert superseded["reason"].startswith("superseded by version 4")
    assert world.mlflow().get_run(world.tags(3)["railyard.mlflow_run_id"]).data.tags["railyard.release_ended"] == (
        "superseded"
    )
    state = world.review_run(3)["state"]
    assert (state["type"], state["name"]) == ("COMPLETED", "Rejected")
    assert world.aliases()["production"] == 4 and world.served_versions() == {4}


def test_a_run_killed_between_publication_and_registration_is_released_by_the_rerun(world):
    killed = world.start_run(5, "--auto-approve", fault="model_registry.stages:StageRegistry.register")
    killed.communicate(timeout=900)
    assert killed.returncode == -9
    manifest = json.loads((world.home / "store" / "recmodel" / "5" / "railyard.json").read_text())
    assert 5 not in world.versions()  # published, never registered
    interrupted = manifest["mlflow_run_id"]
    assert world.mlflow().get_run(interrupted).info.status == "RUNNING"

    summary = world.finish(world.start_run(5, "--auto-approve"))
    assert (summary["model_version"], summary["stage"]) == (5, "production")
    assert [entry["stage"] for entry in world.history(5)] == ["candidate", "staging", "production"]
    assert world.tags(5)["railyard.mlflow_run_id"] == interrupted  # the run that trained it
    ended = world.mlflow().get_run(interrupted)
    assert ended.info.status == "FAILED" and "is gone" in ended.data.tags["railyard.failure"]
    assert world.status()["serving"]["stable"] == 5


def test_a_serving_port_set_and_taken_is_refused_before_any_work(world):
    world.railyard("serve", "--stop")
    experiment = world.mlflow().get_experiment_by_name("railyard").experiment_id
    runs, versions = len(world.mlflow().search_runs([experiment])), world.versions()
    with held(0) as (port,):
        refused = world.finish(world.start_run(6, "--auto-approve", env={PORT_SETTINGS[0]: str(port)}), code=2)
    error, next_step = refused["stderr"].strip().splitlines()[-2:]
    assert error.startswith(f"error: port {port} ({PORT_SETTINGS[0]}) is taken by pid {os.getpid()} (")
    assert next_step.startswith(f"next: set {PORT_SETTINGS[0]} to a free port")
    # Nothing trained, published or started.
    assert len(world.mlflow().search_runs([experiment])) == runs and world.versions() == versions
    assert not (world.home / "serving" / "server.json").exists()


def test_with_tf_servings_ports_held_elsewhere_a_run_serves_on_free_ports_and_says_which(world):
    """Another home's server (or any program) holds 8501/8500: with the ports unset, the run's
    local server takes free ones and the run says which."""
    unset = dict.fromkeys(PORT_SETTINGS)
    with held(DEFAULT_REST_PORT, DEFAULT_GRPC_PORT):
        run = world.start_run(6, "--auto-approve", env=unset)
        stdout, stderr = run.communicate(timeout=900)
    assert run.returncode == 0, stderr[-4000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stage"] == "production"
    state = world.server_state()
    assert DEFAULT_REST_PORT != state["rest_port"] and DEFAULT_GRPC_PORT != state["grpc_port"]
    assert summary["serving"]["rest"] == f"http://127.0.0.1:{state['rest_port']}"
    assert (
        f"the local server listens on REST http://127.0.0.1:{state['rest_port']} "
        f"and gRPC 127.0.0.1:{state['grpc_port']} (not on 8501/8500)"
    ) in stdout + stderr
    assert_serves_its_golden_answers(world, "stable", summary["model_version"])


def test_two_runs_at_once_on_one_home_agree_on_production(world):
    first, second = world.start_run(7, "--auto-approve"), world.start_run(8, "--auto-approve")
    summaries = [world.finish(first), world.finish(second)]
    assert sorted(s["model_version"] for s in summaries) == [7, 8]
    production = world.aliases()["production"]
    assert production in (7, 8) and {world.stage(7), world.stage(8)} == {"production", "archived"}
    status = world.status()
    assert status["serving"]["stable"] == production
    assert [v["version"] for v in status["versions"] if v["stage"] == "production"] == [production]
    assert world.served_versions() == {production}

    world.railyard("serve", "--stop")  # after a restart, serving comes back from its config file
    world.railyard("serve", "--background")
    assert world.status()["serving"]["stable"] == production
    assert_serves_its_golden_answers(world, "stable", production)


def test_a_run_compares_again_with_a_production_that_changed_while_it_waited_for_the_lock(world):
    """The run gates against production; while it waits for the release lock (held by the test),
    an operator rolls production back by hand. Under the lock it must compare again with the
    version it now replaces, on the same holdout rows, before it may promote."""
    earlier = world.aliases()["production"]
    compared = world.finish(world.start_run(11, "--auto-approve"))["model_version"]  # replaces `earlier`
    run = world.start_run(12, "--auto-approve")
    world.wait_for(lambda: _mlflow_run(world, 12) is not None, "the run to start (its reconcile done)", run)
    with open_store(str(world.home / "store")).release_lock(MODEL, owner="the test", lease_s=120, wait_s=600):
        run_id = _mlflow_run(world, 12).info.run_id
        world.wait_for(lambda: "railyard.blessed" in world.mlflow().get_run(run_id).data.tags, "its gate", run)
        path = world.mlflow().download_artifacts(run_id, "evaluation/gate_decision.json", str(world.root))
        first = json.loads(Path(path).read_text())
        assert (first["blessed"], first["baseline_version"]) == (True, compared)
        _roll_back_by_hand(world, earlier)  # what `railyard rollback` does, under the lock the test holds

    summary = world.finish(run)
    gate = summary["gate"]
    assert (gate["blessed"], gate["baseline_version"]) == (True, earlier), gate
    assert f"against production version {earlier}" in gate["reason"]
    metrics = world.mlflow().get_run(run_id).data.metrics  # the same rows as the first comparison
    assert metrics["production_rows"] == metrics["rows"] == summary["holdout_rows"]
    assert world.aliases()["production"] == summary["model_version"]
    assert world.history(earlier)[-1]["reason"] == f"replaced by version {summary['model_version']}"
    flow_run = world.mlflow().get_run(run_id).data.tags["prefect.flow_run_id"]
    query = {"artifacts": {"key": {"any_": ["evaluation-gate"]}}, "flow_runs": {"id": {"any_": [flow_run]}}}
    table = max(world.api("POST", "/artifacts/filter", query)[1], key=lambda artifact: artifact["created"])
    # The gate's rows (a drift row, not gated, names the data it was checked against before training).
    gated = [row for row in json.loads(table["data"]) if "(not gated)" not in str(row["passed"])]
    assert f"production version {earlier}" in json.dumps(gated) and f"version {compared}" not in json.dumps(gated)


def _mlflow_run(world: World, seed: int):
    """The MLflow run of the run on data set ``seed`` (None before it started)."""
    experiment = world.mlflow().get_experiment_by_name("railyard")
    runs = world.mlflow().search_runs([experiment.experiment_id], f"tags.`railyard.data` = '{world.data(seed)}'")
    return runs[0] if runs else None


def _roll_back_by_hand(world: World, version: int) -> None:
    from railyard.settings import Settings
    from tasks import release_steps, serving

    settings = Settings(home=world.home)
    target = serving.serving_target.fn(settings)
    release_steps.make_production.fn(
        target, settings, version, actor="ops", reason="rollback by hand", flow_run_id=None
    )


def test_a_lost_tracking_database_is_refused_and_the_registry_can_be_restored(world):
    production = world.aliases()["production"]
    earlier = max(
        v for v in world.versions() if v != production and "production" in [e["stage"] for e in world.history(v)]
    )
    (world.home / "mlflow.db").unlink()
    # This process's MLflow client still reads the deleted file: look through new processes and SQL.
    refused = world.finish(world.start_run(9, "--auto-approve"), code=2)
    assert "the tracking database was lost or replaced" in refused["stderr"]
    assert "railyard restore-registry" in refused["stderr"]
    with sqlite3.connect(world.home / "mlflow.db") as database:  # nothing recorded, least of all as rejected
        assert database.execute("SELECT COUNT(*) FROM model_versions").fetchone() == (0,)
    assert world.railyard("status", check=False).returncode == 2

    world.railyard("restore-registry")
    status = world.status()
    stages = {entry["version"]: entry["stage"] for entry in status["versions"]}
    assert [v for v, stage in stages.items() if stage == "production"] == [production]
    assert stages[1] == "archived" and status["serving"]["stable"] == production
    # The restored versions keep their history: a plain rollback finds the earlier production version.
    rolled = world.railyard("rollback", "--reason", "after the restore")
    assert f"version {earlier} is stable again" in rolled.stdout
    assert world.status()["serving"]["stable"] == earlier


def test_what_a_run_killed_mid_publication_left_is_removed_by_the_next_reconcile(world):
    store = world.home / "store" / "recmodel"
    registered = world.versions()
    killed = world.start_run(10, "--auto-approve", fault="model_registry.local:LocalStore._create_manifest")
    killed.communicate(timeout=900)
    assert killed.returncode == -9
    (leftover,) = [p for p in store.iterdir() if p.name.isdigit() and not (p / "railyard.json").exists()]
    assert any(leftover.iterdir())  # files uploaded, no manifest: readers never see it

    repaired = world.status()["repaired"]
    assert f"removed the files of unfinished publication {leftover.name} (its number stays taken)" in repaired
    assert not leftover.exists() and world.versions() == registered
    summary = world.finish(world.start_run(10, "--auto-approve"))
    assert summary["model_version"] == int(leftover.name) + 1  # the number is never reused
