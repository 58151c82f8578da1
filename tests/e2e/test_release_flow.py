"""The whole release through the real CLI against a real Prefect server and the local TF Serving.

One world for the module, in order: deployments registered; run 1 started through the API (as
the UI's Run button does), picked up by a worker and auto-approved to production; a re-run on the
same data has nothing new to release; run 2 of the deployment, on the next day's data, starts from
version 1's weights (a warm start) and suspends for its review, holding
no worker and no concurrency slot while the worker restarts, a second run goes through and
several lease periods pass, then it is approved and reaches production; run 3 is rejected; run 4
times out; run 5 fails its smoke tests; then rollbacks; run 6 is approved by the promote deployment.
"""

import getpass
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from railyard import identity
from railyard.loaders import load_dataset
from railyard.model_input import split_rows
from release.review_runs import DEADLINE_MARGIN_S
from tests.support.prefect_server import LEASE_S, REAPER_S
from tests.support.proxy import call, credential, running_proxy
from tests.support.release_world import World, assert_serves_its_golden_answers, predict

pytestmark = pytest.mark.slow
# The reviewer recorded for a CLI decision: whoever runs the command.
ME = getpass.getuser()
PASSWORD = "correct horse battery"  # alice's, for the proxy in front of Prefect


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_server):
    world = World(tmp_path_factory.mktemp("release"), prefect_server)
    yield world
    world.stop_services()


def test_deploy_registers_every_deployment_with_schedule_and_typed_parameters(world):
    world.railyard("deploy")
    status, daily = world.api("GET", "/deployments/name/retrain/daily")
    assert status == 200
    (schedule,) = daily["schedules"]
    assert (schedule["schedule"]["cron"], schedule["schedule"]["timezone"]) == ("0 3 * * *", "Europe/Berlin")
    # The zone is in sight: the UI's schedule card shows the slug (else "At 03:00 AM every day"), the
    # deployment page its description; the run lists show times in the browser's zone.
    assert schedule["slug"] == "daily at 03:00 Europe/Berlin"
    assert "03:00 Europe/Berlin" in daily["description"]
    assert daily["enforce_parameter_schema"] is True and daily["global_concurrency_limit"]["limit"] == 1
    assert daily["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    properties = daily["parameter_openapi_schema"]["properties"]
    assert set(properties) == {"data_dir", "holdout_fraction", "epochs", "model_kind", "training_start", "auto_approve"}
    assert properties["training_start"]["default"] == "auto"
    assert (
        properties["model_kind"]["default"] == "fresh_wd"
        and "RAILYARD_MODEL_KIND" in properties["model_kind"]["description"]
    )
    assert properties["auto_approve"]["default"] is False and "reviewer" in properties["auto_approve"]["description"]
    # The Custom run form shows the effective defaults, read from the settings (RAILYARD_EPOCHS=2 here).
    assert (properties["epochs"]["default"], properties["holdout_fraction"]["default"]) == (2, 0.2)
    assert properties["data_dir"]["default"] == "" and "RAILYARD_DATA_DIR" in properties["data_dir"]["description"]
    for name in ("promote/promote", "rollback/rollback", "reconcile/reconcile"):
        assert world.api("GET", f"/deployments/name/{name}")[0] == 200

    status, error = world.api(
        "POST", f"/deployments/{daily['id']}/create_flow_run", {"parameters": {"holdout_fraction": 2}}
    )
    assert status == 409 and "holdout_fraction" in str(error)

    # The server's scheduler turns the cron into runs: the daily retraining really happens.
    scheduled = _scheduled_runs(world, daily["id"], wait_s=120)
    starts = [
        datetime.fromisoformat(run["expected_start_time"]).astimezone(ZoneInfo("Europe/Berlin")) for run in scheduled
    ]
    assert starts and all((start.hour, start.minute) == (3, 0) for start in starts)
    assert all(run["auto_scheduled"] and run["parameters"] == {"auto_approve": False} for run in scheduled)

    # Switched off (the UI's schedule toggle), the coming runs go: none can reach the worker that
    # the next test starts, whatever the time of day.
    assert world.api("PATCH", f"/deployments/{daily['id']}/schedules/{schedule['id']}", {"active": False})[0] == 204
    assert _scheduled_runs(world, daily["id"]) == []


def _scheduled_runs(world: World, deployment_id: str, wait_s: float = 0) -> list[dict]:
    """The deployment's SCHEDULED runs, waiting up to ``wait_s`` for the scheduler service to
    make some (it runs on every deployment change and then once a minute)."""
    query = {
        "deployments": {"id": {"any_": [deployment_id]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
    }
    deadline = time.monotonic() + wait_s
    while True:
        status, runs = world.api("POST", "/flow_runs/filter", query)
        assert status == 200, runs
        if runs or time.monotonic() >= deadline:
            return runs
        time.sleep(2)


def test_a_ui_started_run_is_picked_up_by_a_worker_and_reaches_production(world):
    flow_run_id = world.start_deployment_run({"data_dir": str(world.data(1)), "auto_approve": True, "epochs": 2})
    world.railyard("worker", "--run-once")
    state = world.flow_run(flow_run_id)["state"]
    assert state["type"] == "COMPLETED" and state["message"].startswith("version 1 promoted to production by railyard")

    assert world.aliases() == {"production": 1, "champion": 1}
    tags = world.tags(1)
    assert tags["railyard.stage"] == "production" and tags["railyard.serving_label"] == "stable"
    assert tags["railyard.prefect_flow_run_id"] == flow_run_id and len(tags["railyard.manifest_sha256"]) == 64
    assert [entry["stage"] for entry in world.history(1)] == ["candidate", "staging", "production"]
    status = world.status()
    assert status["serving"] == {"stable": 1, "canary": 1} and status["repaired"] == []
    assert status["versions"][0]["approved_by"] == "railyard (auto_approve)"
    run = world.mlflow().get_run(tags["railyard.mlflow_run_id"])
    assert run.data.metrics["smoke_passed"] == 1.0 and "smoke_latency_p95_ms" in run.data.metrics
    assert run.info.run_name == "recmodel-v1" and run.info.status == "FINISHED"
    assert run.data.tags["railyard.release_ended"] == "approved"
    (linked,) = world.mlflow().search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert json.loads(linked.tags["mlflow.modelVersions"]) == [
        {"name": "recmodel", "version": "1"}
    ]  # the Models column
    experiment = world.mlflow().get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # MLflow's training view

    scores = predict(world.rest_url(), "stable")  # what the run's curl line does
    assert len(scores) == 2 and all(0 < score[0] < 1 for score in scores)


def test_a_rerun_on_unchanged_data_has_nothing_new_to_release(world):
    summary = world.finish(world.start_run(1, "--auto-approve"))
    assert (summary["model_version"], summary["stage"]) == (1, "production")
    assert summary["outcome"].startswith("nothing new to release: version 1 already holds this model")
    assert world.versions() == [1] and world.aliases()["production"] == 1
    assert world.mlflow().get_run(summary["mlflow_run_id"]).info.run_name == "recmodel-unchanged-v1"


def test_a_deployment_run_waits_for_its_review_without_a_process_a_slot_or_a_lease(world):
    # Warm, asked for in the run's form: on data this small every day drifts, and `auto` would
    # train from scratch.
    parameters = {"data_dir": str(world.next_day(1)), "epochs": 2, "training_start": "warm"}
    flow_run_id = world.start_deployment_run(parameters)
    world.railyard("worker", "--run-once")  # the worker runs it until it suspends, then exits
    suspended_at = time.monotonic()
    run = world.flow_run(flow_run_id)
    assert (run["state"]["type"], run["state"]["name"]) == ("PAUSED", "Suspended")
    assert world.stage(2) == "staging" and world.tags(2)["railyard.review_run"] == flow_run_id
    # The next day's version started from production's weights, on the day's ratings and a replay,
    # and was gated against production on the same fresh holdout rows.
    tags = world.tags(2)
    assert (tags["railyard.training_start"], tags["railyard.warm_from"]) == ("warm", "1"), tags
    assert int(tags["railyard.train_cutoff"]) > int(world.tags(1)["railyard.train_cutoff"])
    assert tags["railyard.full_trained_at"] == world.tags(1)["railyard.train_cutoff"]  # v1 was the full retrain
    training_run = world.mlflow().get_run(tags["railyard.mlflow_run_id"])
    assert (
        training_run.data.params["training_start"] == "warm"
        and training_run.data.metrics["kind_warm_user_rows_carried"] > 0
    )
    # A small history: the replay is its largest share (RAILYARD_WARM_REPLAY_SHARE), not the floor.
    assert float(training_run.data.params["warm_replay_share"]) == 0.1
    holdout_rows = int(training_run.data.metrics["rows"])
    assert training_run.data.metrics["production_rows"] == holdout_rows  # production scored on the same rows
    # The feature build wrote (and validated) as training rows only those the warm start reads.
    written = split_rows(Path(training_run.data.tags["railyard.features"]) / "train")
    trained_on = training_run.data.metrics["fit_rows"] + training_run.data.metrics["validation_rows"]
    assert written == trained_on < load_dataset(world.next_day(1)).ratings.height - holdout_rows
    review = world.api(
        "POST",
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["approval-needed"]}}, "flow_runs": {"id": {"any_": [flow_run_id]}}},
    )[1]
    assert any("warm-started from version 1" in str(artifact["data"]) for artifact in review)
    _, daily = world.api("GET", "/deployments/name/retrain/daily")
    limit = world.api("GET", f"/v2/concurrency_limits/{daily['global_concurrency_limit']['id']}")[1]
    assert limit["active_slots"] == 0  # the suspended run holds no slot

    # Looking at it concludes nothing: a suspended run has no process to lose.
    status = world.status()
    assert status["serving"] == {"stable": 1, "canary": 2} and status["repaired"] == []
    assert_serves_its_golden_answers(world, "stable", 1)
    assert_serves_its_golden_answers(world, "canary", 2)
    # A SparrowRecSys-style client names no version: TF Serving answers with the newest served one.
    assert len(predict(world.rest_url(), None, [{"userId": 6, "movieId": 1}, {"userId": 7, "movieId": 2}])) == 2

    # The next scheduled run is not blocked: a new worker runs it at once. Same data: its model is
    # the one under review, so it has nothing new to release and leaves the review alone.
    second = world.start_deployment_run({"data_dir": str(world.next_day(1)), "epochs": 2})
    world.railyard("worker", "--run-once")
    state = world.flow_run(second)["state"]
    assert state["type"] == "COMPLETED" and "nothing new to release: version 2" in state["message"]
    assert state["message"].endswith("is staging") and world.flow_run(flow_run_id)["state"]["type"] == "PAUSED"

    # Long enough for a lease held across the wait to have expired and been taken back.
    time.sleep(max(0.0, LEASE_S + 3 * REAPER_S - (time.monotonic() - suspended_at)))
    world.railyard("approve", "2", "--reviewer", "alice", "--comment", "looks good")  # alice: a name beside ours
    world.railyard("worker", "--run-once")  # a third worker process resumes it
    state = world.flow_run(flow_run_id)["state"]
    assert state["type"] == "COMPLETED", state
    assert state["message"] == f"version 2 promoted to production by {ME}: looks good [named: alice]"
    assert world.aliases() == {"production": 2, "champion": 2}
    assert world.stage(1) == "archived" and "serving_label" not in str(world.tags(1))
    promoted = world.history(2)[-1]
    assert (promoted["stage"], promoted["actor"], promoted["reason"]) == ("production", ME, "looks good [named: alice]")
    assert promoted["flow_run_id"] == flow_run_id
    assert world.history(1)[-1]["reason"] == "replaced by version 2"
    assert world.status()["serving"] == {"stable": 2, "canary": 2}
    artifacts = world.api(
        "POST",
        "/artifacts/filter",
        {"artifacts": {"key": {"any_": ["approval-needed"]}}, "flow_runs": {"id": {"any_": [flow_run_id]}}},
    )[1]
    assert any(f"promoted to production by {ME}" in str(artifact["data"]) for artifact in artifacts)


def test_a_rejected_canary_is_unloaded_and_stable_keeps_serving(world):
    run = world.start_run(3)
    flow_run_id = world.wait_until_waiting(3, run)["id"]
    # An approval sent straight to Prefect's API carries no signed record of who sent it: Prefect
    # resumes the run, the run refuses the answer and waits again; nothing reaches production.
    direct = {"decision": "approve", "reviewer": "mallory", "comment": "trust me"}
    assert world.api("POST", f"/flow_runs/{flow_run_id}/resume", {"run_input": direct})[1]["status"] == "ACCEPT"
    world.wait_for(
        lambda: (world.flow_run(flow_run_id)["state"]["state_details"].get("pause_key") or "").endswith("-2"),
        "the review to wait again",
        run,
    )
    assert world.stage(3) == "staging" and world.aliases()["production"] == 2
    refused = world.railyard("reject", "3", "--reviewer", "bob", check=False)
    assert refused.returncode == 2 and "a rejection needs a comment" in refused.stderr
    world.railyard("reject", "3", "--reviewer", "bob", "--comment", "odd scores for new users")
    summary = world.finish(run)
    assert summary["stage"] == "rejected" and summary["serving"]["labels"] == {"stable": 2, "canary": 2}
    assert (summary["decided_by"], summary["reason"]) == (ME, "odd scores for new users [named: bob]")
    rejected = world.history(3)[-1]
    assert (rejected["stage"], rejected["actor"], rejected["reason"]) == (
        "rejected",
        ME,
        "odd scores for new users [named: bob]",
    )
    state = world.review_run(3)["state"]
    assert (state["type"], state["name"]) == ("COMPLETED", "Rejected")
    assert state["message"] == f"version 3 rejected by {ME}: odd scores for new users [named: bob]"
    assert world.aliases()["production"] == 2
    assert world.served_versions() == {2}  # the rejected canary is unloaded
    assert (
        world.mlflow().get_run(world.tags(3)["railyard.mlflow_run_id"]).data.tags["railyard.release_ended"]
        == "rejected"
    )
    assert len(predict(summary["serving"]["rest"], "stable")) == 2

    # The same data again: that model was rejected, and stays so.
    again = world.finish(world.start_run(3, "--auto-approve"))
    assert (again["model_version"], again["stage"]) == (3, "rejected") and world.versions() == [1, 2, 3]


def test_no_answer_within_the_timeout_rejects_the_canary(world, webhook):
    hook = {"RAILYARD_WEBHOOK_URL": os.environ["RAILYARD_WEBHOOK_URL"]}  # the world's env predates the fixture
    run = world.start_run(4, env={"RAILYARD_APPROVAL_TIMEOUT_S": "5"} | hook)
    summary = world.finish(run)
    assert summary["stage"] == "rejected" and summary["serving"]["labels"] == {"stable": 2, "canary": 2}
    assert world.history(4)[-1]["reason"] == "no approval within 5 s"
    assert world.served_versions() == {2}
    rejected = [message for message in webhook if message["event"] == "rejected"]
    assert [(m["version"], m["ending"]) for m in rejected] == [(4, "timed out")]
    assert (
        world.mlflow().get_run(world.tags(4)["railyard.mlflow_run_id"]).data.tags["railyard.release_ended"]
        == "timed out"
    )


def test_a_canary_failing_its_smoke_tests_is_rolled_back_by_the_flow(world):
    # A latency budget no server can meet: every other check passes, the burst fails.
    run = world.start_run(5, env={"RAILYARD_SMOKE_P95_MS": "0.001"})
    _, stderr = run.communicate(timeout=600)
    assert run.returncode == 2 and "FAIL latency_burst" in stderr and "FAIL golden" not in stderr
    rejected = world.history(5)[-1]
    assert rejected["stage"] == "rejected" and rejected["actor"] == "railyard"
    assert rejected["reason"].startswith("smoke tests failed: latency_burst:") and "golden" not in rejected["reason"]
    assert world.flow_run(world.tags(5)["railyard.prefect_flow_run_id"])["state"]["type"] == "FAILED"
    assert world.served_versions() == {2}  # the canary is unloaded
    assert world.aliases()["production"] == 2
    assert world.status()["serving"] == {"stable": 2, "canary": 2}
    assert_serves_its_golden_answers(world, "stable", 2)


def test_rollback_restores_the_previous_production_version_and_refuses_others(world):
    refused = world.railyard("rollback", "--to", "3", check=False)
    assert refused.returncode == 2 and "rejected" in refused.stderr
    missing = world.railyard("rollback", "--to", "99", check=False)
    assert missing.returncode == 2 and "99" in missing.stderr

    world.railyard("rollback", "--reason", "complaints about v2", "--actor", "carol")
    assert world.aliases() == {"production": 1, "champion": 1}
    assert world.tags(2)["railyard.stage"] == "archived"
    restored = world.history(1)[-1]
    assert (restored["stage"], restored["actor"]) == ("production", ME) and "[named: carol]" in restored["reason"]
    assert "complaints about v2" in restored["reason"]
    assert world.status()["serving"]["stable"] == 1
    # The whole story, on both versions' transition histories.
    assert [entry["stage"] for entry in world.history(1)] == [
        "candidate",
        "staging",
        "production",
        "archived",
        "production",
    ]
    assert [entry["stage"] for entry in world.history(2)] == ["candidate", "staging", "production", "archived"]
    assert world.history(2)[-1]["actor"] == ME


def test_the_promote_deployment_approves_a_waiting_review(world):
    """The promote flow, started from the UI through the proxy by alice (a name typed in the
    form): the version reaches production as hers, and the run waiting for its review wakes up and
    ends with that decision. The same form sent straight to Prefect's API proves nobody: refused."""
    run = world.start_run(6)
    world.wait_until_waiting(6, run)
    parameters = {"version": 6, "reviewer": "dana", "comment": "approved from the promote form"}
    identity.add_user(world.home, "alice", PASSWORD)
    _, promote = world.api("GET", "/deployments/name/promote/promote")
    # One promote at a time (the deployment's concurrency limit): first the run nobody proved.
    unproven = world.start_deployment_run(parameters, deployment="promote/promote")
    world.railyard("worker", "--run-once", env={"RAILYARD_STARTED_RECORD_WAIT_S": "2"})
    refused = world.flow_run(unproven)["state"]
    assert refused["type"] == "FAILED" and "was not started through the proxy" in refused["message"], refused
    assert world.stage(6) == "staging"
    with running_proxy(world.home, world.api_url.removesuffix("/api")) as proxy:
        status, created = call(
            "POST",
            f"{proxy}/api/deployments/{promote['id']}/create_flow_run",
            {"parameters": parameters},
            auth=credential("alice", PASSWORD),
        )
    assert status == 201, created
    world.railyard("worker", "--run-once")
    assert world.flow_run(created["id"])["state"]["type"] == "COMPLETED"
    summary = world.finish(run)
    assert summary["stage"] == "production" and summary["serving"]["labels"] == {"stable": 6, "canary": 6}
    assert (summary["decided_by"], summary["reason"]) == ("alice", "approved from the promote form [named: dana]")
    promoted = world.history(6)[-1]
    assert (promoted["stage"], promoted["actor"], promoted["flow_run_id"]) == ("production", "alice", created["id"])
    assert world.aliases() == {"production": 6, "champion": 6}
    assert world.tags(1)["railyard.stage"] == "archived"
    assert_serves_its_golden_answers(world, "stable", 6)


@pytest.fixture
def first_home(tmp_path_factory, prefect_server, world):
    """A second home on the same Prefect server whose first version is still to come; the
    deployments are the module's (registered here when this test runs alone)."""
    if world.api("GET", "/deployments/name/retrain/daily")[0] != 200:
        world.railyard("deploy")
        _, daily = world.api("GET", "/deployments/name/retrain/daily")
        for schedule in daily["schedules"]:  # no scheduled run may reach the workers started here
            world.api("PATCH", f"/deployments/{daily['id']}/schedules/{schedule['id']}", {"active": False})
    home = World(tmp_path_factory.mktemp("first"), prefect_server)
    yield home
    home.stop_services()


def test_after_the_only_version_is_rejected_serving_starts_again_for_the_next(first_home):
    """Reject v1 (nothing else was ever served), stop serving (as a reboot does), then a run from
    the deployment: serving starts with nothing to serve and v2 goes through canary and review."""
    world = first_home
    run = world.start_run(1)
    world.wait_until_waiting(1, run)
    world.railyard("reject", "1", "--comment", "not good enough")
    assert world.finish(run)["stage"] == "rejected"
    assert world.served_versions() == set()
    world.railyard("serve", "--stop")

    flow_run_id = world.start_deployment_run({"data_dir": str(world.data(2)), "epochs": 2})
    world.railyard("worker", "--run-once")  # runs it until it suspends for its review
    run = world.flow_run(flow_run_id)
    assert (run["state"]["type"], run["state"]["name"]) == ("PAUSED", "Suspended"), run["state"]["message"]
    assert world.stage(2) == "staging" and world.status()["serving"] == {"stable": None, "canary": 2}
    assert_serves_its_golden_answers(world, "canary", 2)
    deadline = json.loads(world.tags(2)["railyard.release_run"])["deadline"]
    _the_review_request_holds_the_numbers(world, flow_run_id, deadline)
    said = world.railyard("status").stdout
    assert "None" not in said and "canary" in said and "stable ->" not in said, said
    assert re.search(rf"v2 +staging .*awaiting review since .* UTC, flow run {flow_run_id}, deadline .* UTC", said), (
        said
    )
    assert re.search(rf"v1 +rejected .*rejected by {ME} at .* UTC: not good enough", said), said
    rejected = {entry["version"]: entry for entry in world.status()["versions"]}[1]
    assert (rejected["rejected_by"], rejected["reason"]) == (ME, "not good enough")
    review = {entry["version"]: entry for entry in world.status()["versions"]}[2]["review"]
    assert (review["flow_run_id"], review["deadline"]) == (flow_run_id, deadline)

    world.railyard("approve", "2", "--comment", "better")
    world.railyard("worker", "--run-once")
    state = world.flow_run(flow_run_id)["state"]
    assert state["type"] == "COMPLETED", state
    assert world.aliases()["production"] == 2 and world.status()["serving"] == {"stable": 2, "canary": 2}
    assert_serves_its_golden_answers(world, "stable", 2)
    said = world.railyard("status").stdout
    assert "serving: stable -> 2\n" in said and "canary" not in said, said
    assert re.search(rf"v2 +production .*by {ME} at .* UTC: better", said), said

    # The answered review's deadline check is cancelled, not left scheduled for the whole window.
    (deadline_run,) = _deadline_runs(world, deadline)
    assert deadline_run["state"]["type"] == "CANCELLED", deadline_run["state"]
    logs = _log_lines(world, flow_run_id)
    waiting = [index for index, line in enumerate(logs) if "waits for a reviewer" in line]
    suspended = [index for index, line in enumerate(logs) if "Suspending flow run" in line]
    assert len(waiting) == 1 and len(suspended) == 1 and waiting[0] < suspended[0], logs  # once, before suspending
    assert "recmodel version 2" in logs[waiting[0]] and " UTC" in logs[waiting[0]], logs
    resumed = logs[suspended[0] + 1 :]
    assert any(f"{ME} answered approve: better" in line for line in resumed), resumed
    decided = [a for a in _artifacts(world, flow_run_id) if "## Decided" in str(a["data"])]
    assert decided and decided[-1]["description"] == f"recmodel v2: production ({ME})", decided


def _the_review_request_holds_the_numbers(world: World, flow_run_id: str, deadline: float) -> None:
    """The artifact and the Resume form's description: the gate with its thresholds, the model
    beside the baselines and production, smoke tests and skew in tables, the deadline as a time."""
    (request,) = [a for a in _artifacts(world, flow_run_id) if "awaits your review" in str(a["data"])]
    markdown = request["data"]
    when = datetime.fromtimestamp(deadline, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    for shown in (
        "| check | value | threshold | measured against | passed |",
        "| auc |",
        "| auc_lift_vs_fresh_baseline |",
        "fresh baseline (user + movie rates)",
        "popularity baseline",
        "| latency_burst |",
        "Online store vs. offline features",
        "Data `",
        when,
        "`railyard approve 2 --comment WHY`",
        "`railyard reject 2 --comment WHY`",
    ):
        assert shown in markdown, shown
    assert "```" not in markdown and "86400 s" not in markdown
    assert when in request["description"]
    _, inputs = world.api("POST", f"/flow_runs/{flow_run_id}/input/filter", {"prefix": "suspended-", "limit": 10})
    (description,) = [json.loads(i["value"]) for i in inputs if i["key"].endswith("-description")]
    assert description == markdown


def _artifacts(world: World, flow_run_id: str) -> list[dict]:
    query = {"artifacts": {"key": {"any_": ["approval-needed"]}}, "flow_runs": {"id": {"any_": [flow_run_id]}}}
    return sorted(world.api("POST", "/artifacts/filter", query)[1], key=lambda artifact: artifact["created"])


def _deadline_runs(world: World, deadline: float) -> list[dict]:
    """The reconcile runs scheduled for this deadline (it plus the margin)."""
    _, reconcile = world.api("GET", "/deployments/name/reconcile/reconcile")
    _, runs = world.api("POST", "/flow_runs/filter", {"deployments": {"id": {"any_": [reconcile["id"]]}}})
    return [
        run
        for run in runs
        if abs(datetime.fromisoformat(run["expected_start_time"]).timestamp() - deadline - DEADLINE_MARGIN_S) < 2
    ]


def _log_lines(world: World, flow_run_id: str) -> list[str]:
    lines: list[str] = []
    while True:
        query = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC", "offset": len(lines)}
        page = [entry["message"] for entry in world.api("POST", "/logs/filter", query)[1]]
        if not page:
            return lines
        lines += page
