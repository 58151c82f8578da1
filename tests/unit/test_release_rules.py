"""The release rules (pure functions): what each step's outcome does to a version, and what
concludes releases whose run is gone and repairs serving."""

import os
import signal
import subprocess
import sys
import time

import pytest

from model_registry.release_rules import (
    SYSTEM_ACTOR,
    Outcome,
    RunView,
    ServingPlan,
    Verdict,
    canary_share_after,
    release_ending,
    release_verdict,
    review_outcome,
    serving_plan,
    store_gaps,
)
from model_registry.stages import Stage
from railyard.processes import current_process, process_alive

NOW = 1_000_000.0


# ---------------------------------------------------------------- the release's branching


@pytest.mark.parametrize(
    ("outcome", "detail", "expected"),
    [
        (
            Outcome.NOT_BLESSED,
            "auc=0.5 fails >= 0.6",
            Verdict(Stage.REJECTED, SYSTEM_ACTOR, "not blessed: auc=0.5 fails >= 0.6", "not blessed"),
        ),
        (
            Outcome.LOAD_FAILED,
            "DATA_LOSS: truncated",
            Verdict(Stage.REJECTED, SYSTEM_ACTOR, "TF Serving could not load it: DATA_LOSS: truncated", "load failed"),
        ),
        (
            Outcome.SMOKE_FAILED,
            "golden_rest: differ by 0.3",
            Verdict(
                Stage.REJECTED, SYSTEM_ACTOR, "smoke tests failed: golden_rest: differ by 0.3", "smoke tests failed"
            ),
        ),
        (Outcome.SMOKE_PASSED, "", Verdict(Stage.STAGING, SYSTEM_ACTOR, "smoke tests passed")),
        (
            Outcome.BAKE_FAILED,
            "canary v3: 120 requests, 25.00% errors",
            Verdict(
                Stage.REJECTED,
                SYSTEM_ACTOR,
                "rolled back during the bake: canary v3: 120 requests, 25.00% errors",
                "rolled back during the bake",
            ),
        ),
        (
            Outcome.TIMED_OUT,
            "86400 s",
            Verdict(Stage.REJECTED, SYSTEM_ACTOR, "no approval within 86400 s", "timed out"),
        ),
        (
            Outcome.SUPERSEDED,
            "7",
            Verdict(Stage.REJECTED, SYSTEM_ACTOR, "superseded by version 7, trained on newer data", "superseded"),
        ),
    ],
)
def test_what_railyard_decides_itself(outcome, detail, expected):
    assert release_verdict(outcome, detail) == expected


def test_serving_down_leaves_the_version_a_candidate_for_a_re_run():
    verdict = release_verdict(Outcome.SERVING_DOWN, "REST http://127.0.0.1:8501 refused")
    assert verdict.stage is None and verdict.ending is None
    assert "refused" in verdict.reason


def test_a_reviewer_decides_under_their_own_name():
    assert release_verdict(Outcome.APPROVED, "looks good", actor="alice") == Verdict(
        Stage.PRODUCTION, "alice", "looks good"
    )
    assert release_verdict(Outcome.APPROVED, "", actor="alice").reason == "approved"  # a comment is optional
    assert release_verdict(Outcome.REJECTED, "worse on new users", actor="bob") == Verdict(
        Stage.REJECTED, "bob", "worse on new users", "rejected"
    )


def test_the_canary_share_follows_the_version_stage():
    assert canary_share_after(Stage.STAGING, 0.1) == 0.1  # baking, awaiting review
    assert canary_share_after(Stage.PRODUCTION, 0.1) == 1.0
    assert canary_share_after(Stage.REJECTED, 0.1) == 0.0
    assert canary_share_after(None, 0.1) is None  # a candidate waiting for a re-run: unchanged


def test_review_answers_and_silence_map_to_outcomes():
    assert review_outcome("approve") is Outcome.APPROVED
    assert review_outcome("reject") is Outcome.REJECTED
    assert review_outcome(None) is Outcome.TIMED_OUT
    with pytest.raises(KeyError):
        review_outcome("maybe")


def test_every_outcome_has_a_verdict_and_every_rejection_an_ending():
    for outcome in Outcome:
        verdict = release_verdict(outcome, "detail", actor="alice")
        assert (verdict.ending is not None) == (verdict.stage is Stage.REJECTED), outcome


# ---------------------------------------------------------------- unfinished releases


def owner(mode: str = "pause", deadline: float | None = NOW + 3600) -> dict:
    return {"flow_run_id": "run-1", "process": {"host": "h", "pid": 7, "start": 1}, "mode": mode, "deadline": deadline}


@pytest.mark.parametrize(
    ("mode", "run", "alive", "kind"),
    [
        # Still able to finish: nothing to conclude.
        ("pause", RunView("PAUSED"), True, None),
        ("suspend", RunView("PAUSED", "Suspended"), False, None),  # no process while suspended
        ("suspend", RunView("SCHEDULED", "Resuming"), False, None),  # resumed: a new process comes
        ("suspend", RunView("RUNNING"), False, None),
        ("run", RunView("RUNNING"), None, None),  # another host: trust Prefect
        ("run", None, None, None),  # Prefect cannot be asked, the process cannot be checked
        # Gone.
        ("pause", RunView("PAUSED"), False, "crashed"),  # kill -9 while waiting in its process
        ("run", RunView("RUNNING"), False, "crashed"),
        ("run", None, False, "crashed"),
        ("suspend", RunView("CRASHED", "Crashed", "process exited with code -9"), None, "crashed"),
        ("run", RunView("CANCELLED", "Cancelled", "by alice"), True, "cancelled"),
        ("suspend", RunView("FAILED", "Failed", "The flow was suspended and never resumed."), None, "timed out"),
        ("run", RunView("FAILED", "Failed", "ServingUnavailableError"), None, "failed"),
        ("run", RunView("COMPLETED"), None, "failed"),
        ("pause", RunView(None), None, "failed"),  # the flow run was deleted
    ],
)
def test_a_release_ends_when_its_run_can_no_longer_finish_it(mode, run, alive, kind):
    ending = release_ending(owner(mode), run, now=NOW, process_alive=alive)
    assert (ending.kind if ending else None) == kind
    if ending:
        assert "run-1" in ending.reason


def test_a_review_past_its_deadline_timed_out_even_if_prefect_has_not_noticed_yet():
    for run in (RunView("PAUSED", "Suspended"), None, RunView(None)):
        ending = release_ending(owner("suspend", deadline=NOW - 1), run, now=NOW, process_alive=None)
        assert ending.kind == "timed out" and "deadline" in ending.reason
    # Resumed in time: the run applies the decision, however late it gets to it.
    assert release_ending(owner("suspend", deadline=NOW - 1), RunView("SCHEDULED"), now=NOW, process_alive=None) is None


def test_crash_reasons_name_the_process():
    ending = release_ending(owner("pause"), RunView("PAUSED"), now=NOW, process_alive=False)
    assert "pid 7 on h" in ending.reason and "is gone" in ending.reason


@pytest.mark.parametrize(
    ("production", "in_review", "labels", "plan"),
    [
        (None, None, {}, ServingPlan()),
        (2, None, {"stable": 2, "canary": 2}, ServingPlan()),
        (2, 3, {"stable": 2, "canary": 3}, ServingPlan()),
        (2, None, {"stable": 2, "canary": 3}, ServingPlan(unload=3)),  # a dead review's canary
        (None, None, {"canary": 1}, ServingPlan(unload=1)),  # the first release died mid-review
        (2, None, {"stable": 1, "canary": 1}, ServingPlan(stable=2)),  # a stale config came back
        (2, 4, {"stable": 1, "canary": 4}, ServingPlan(stable=2, canary=4)),  # stable alone, then the canary
        (2, 3, {"stable": 2, "canary": 2}, ServingPlan(canary=3)),  # a rollback took the canary
        (2, 3, {"stable": 2, "canary": 4}, ServingPlan(canary=3)),  # loading 3 unloads 4
        (2, None, {}, ServingPlan(stable=2)),  # a serving root that lost its config
    ],
)
def test_serving_plan_puts_stable_on_production_and_canary_on_the_review(production, in_review, labels, plan):
    assert serving_plan(production, in_review, labels) == plan
    assert bool(plan) == (plan != ServingPlan())


def test_store_versions_missing_from_mlflow_are_stranded_or_a_lost_database():
    gaps = store_gaps({1: "a", 2: "b", 3: "c", 4: None}, registered={1}, known_runs={"a", "b"})
    assert gaps.stranded == (2,) and gaps.unknown == (3, 4)
    assert store_gaps({1: "a"}, registered={1}, known_runs=set()) == store_gaps({}, registered={1}, known_runs=set())


def test_process_identity_tells_a_live_process_from_a_dead_or_reused_pid():
    me = current_process()
    assert process_alive(me) is True
    assert process_alive(me | {"start": me["start"] + 1}) is False  # the pid was reused
    assert process_alive(me | {"host": "elsewhere"}) is None and process_alive(None) is None
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        identity = None
        while identity is None or identity["start"] is None:
            from railyard.processes import _start_ticks

            identity = {"host": me["host"], "pid": child.pid, "start": _start_ticks(child.pid)}
        assert process_alive(identity) is True
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(identity) and time.monotonic() < deadline:  # a zombie counts as dead too
            time.sleep(0.05)
        assert process_alive(identity) is False
    finally:
        child.kill()
        child.wait()
