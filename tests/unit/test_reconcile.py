"""The rules that conclude releases whose run is gone and repair serving (pure functions)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from model_registry.reconcile import RunView, ServingPlan, release_ending, serving_plan, store_gaps
from railyard.processes import current_process, process_alive

NOW = 1_000_000.0


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
