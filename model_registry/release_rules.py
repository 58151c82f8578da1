"""The release's rules as pure decisions: what each step's outcome does to a version, and what
brings a model's release state back in line with what really happened.

A release spans processes and hours: the run that carries a version through canary, smoke
tests and review can be killed, cancelled or forgotten by its reviewer. Every run, ``railyard
status`` and the CLI's approve/reject look at the facts (MLflow stages, the store, the serving
config, the Prefect run states, whether recorded processes still exist) and these functions say
what must change. They do no I/O, so each rule has a unit test; ``release/`` gathers the facts
and applies the answers (``release.verdicts``), driven by ``flows/release_orchestration.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import Enum

from model_registry.stages import Stage

# The actor recorded for what Railyard decides itself (gate, smoke tests, timeouts).
SYSTEM_ACTOR = "railyard"

# Prefect state types of a run that may still finish its release.
LIVE_STATES = frozenset({"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"})
# The message Prefect's server gives a paused/suspended run it failed at the pause's deadline.
_NEVER_RESUMED = "never resumed"


class Outcome(Enum):
    """What a step of a release came to."""

    NOT_BLESSED = "not blessed"  # the evaluation gate said no
    LOAD_FAILED = "load failed"  # TF Serving could not load the version
    SERVING_DOWN = "serving down"  # serving did not answer (or timed out) while loading the canary
    SMOKE_FAILED = "smoke tests failed"
    SMOKE_PASSED = "smoke tests passed"
    BAKE_FAILED = "rolled back during the bake"  # its share of live traffic went over budget
    SUPERSEDED = "superseded"  # a newer blessed version takes its place
    TIMED_OUT = "timed out"  # nobody answered within the approval window
    REJECTED = "rejected"  # by its reviewer
    APPROVED = "approved"  # by its reviewer, or by Railyard with auto_approve


@dataclass(frozen=True)
class Verdict:
    """What an outcome does to the version: its next stage (None: it stays a candidate, and a
    re-run picks it up), who decided, why, and how its release ended when it ends here."""

    stage: Stage | None
    actor: str
    reason: str
    ending: str | None = None


def release_verdict(outcome: Outcome, detail: str = "", *, actor: str = SYSTEM_ACTOR) -> Verdict:
    """The verdict for one outcome. ``detail`` says what happened (the gate's reason, the load
    error, the failed smoke checks, the approval window, the reviewer's comment, the newer
    version); ``actor`` is the reviewer for a decision."""
    match outcome:
        case Outcome.NOT_BLESSED:
            return Verdict(Stage.REJECTED, SYSTEM_ACTOR, f"not blessed: {detail}", outcome.value)
        case Outcome.LOAD_FAILED:
            return Verdict(Stage.REJECTED, SYSTEM_ACTOR, f"TF Serving could not load it: {detail}", outcome.value)
        case Outcome.SERVING_DOWN:
            return Verdict(None, SYSTEM_ACTOR, f"serving unavailable, the version waits for a re-run: {detail}")
        case Outcome.SMOKE_FAILED:
            return Verdict(Stage.REJECTED, SYSTEM_ACTOR, f"smoke tests failed: {detail}", outcome.value)
        case Outcome.SMOKE_PASSED:
            return Verdict(Stage.STAGING, SYSTEM_ACTOR, "smoke tests passed")
        case Outcome.BAKE_FAILED:
            return Verdict(Stage.REJECTED, SYSTEM_ACTOR, f"rolled back during the bake: {detail}", outcome.value)
        case Outcome.SUPERSEDED:
            return Verdict(
                Stage.REJECTED, SYSTEM_ACTOR, f"superseded by version {detail}, trained on newer data", outcome.value
            )
        case Outcome.TIMED_OUT:
            return Verdict(Stage.REJECTED, SYSTEM_ACTOR, f"no approval within {detail}", outcome.value)
        case Outcome.REJECTED:
            return Verdict(Stage.REJECTED, actor, detail, outcome.value)
        case Outcome.APPROVED:
            return Verdict(Stage.PRODUCTION, actor, detail or "approved")
    raise ValueError(f"unknown release outcome {outcome!r}")


def canary_share_after(stage: Stage | None, canary_share: float) -> float | None:
    """The share of users the canary label serves once a version reaches ``stage``: its share
    while it bakes and awaits review (staging), everyone once it is production (`canary` and
    `stable` then name it alike), nobody once rejected; None leaves the share as it is."""
    if stage is Stage.STAGING:
        return canary_share
    if stage is Stage.PRODUCTION:
        return 1.0
    if stage is Stage.REJECTED:
        return 0.0
    return None


def review_outcome(decision: str | None) -> Outcome:
    """A reviewer's answer ("approve", "reject"), or None when the approval window ran out."""
    if decision is None:
        return Outcome.TIMED_OUT
    return {"approve": Outcome.APPROVED, "reject": Outcome.REJECTED}[decision]


@dataclass(frozen=True)
class RunView:
    """A Prefect flow run as the API reports it; ``state_type`` None: the run does not exist."""

    state_type: str | None
    state_name: str = ""
    message: str = ""


@dataclass(frozen=True)
class Ending:
    """How an in-flight release ended without its run finishing it."""

    kind: str  # "timed out", "crashed", "cancelled" or "failed"
    reason: str


def release_ending(owner: Mapping, run: RunView | None, *, now: float, process_alive: bool | None) -> Ending | None:
    """The ending of a release whose run can no longer finish it; None while it still can.

    ``owner`` is what the run recorded when it took the version into its release: its flow run
    id, its process, ``mode`` ("suspend": the run waits without a process; "pause": it waits in
    its process; "run": it is working) and the review ``deadline`` (epoch seconds) if any.
    ``run`` is None when Prefect could not be asked; ``process_alive`` None when the process
    cannot be checked from here (another host).
    """
    flow_run = owner.get("flow_run_id")
    deadline = owner.get("deadline")
    if deadline is not None and now > deadline and (run is None or run.state_type in (None, "PAUSED")):
        return Ending("timed out", f"no decision within the approval window (deadline passed; run {flow_run})")
    if run is not None and run.state_type is None:
        return Ending("failed", f"its flow run {flow_run} no longer exists")
    if run is not None and run.state_type not in LIVE_STATES:
        if run.state_type == "CRASHED":
            return Ending("crashed", f"its run {flow_run} crashed: {run.message or run.state_name}")
        if run.state_type == "CANCELLED":
            return Ending("cancelled", f"its run {flow_run} was cancelled: {run.message or run.state_name}")
        if _NEVER_RESUMED in run.message:
            return Ending("timed out", f"no decision within the approval window (run {flow_run}: {run.message})")
        return Ending("failed", f"its run {flow_run} ended {run.state_name} before the release finished: {run.message}")
    # A suspended run has no process while it waits, and a new one (unknown here) once resumed.
    if process_alive is False and owner.get("mode") != "suspend":
        where = f"pid {owner.get('process', {}).get('pid')} on {owner.get('process', {}).get('host')}"
        return Ending("crashed", f"its run {flow_run} was interrupted: its process ({where}) is gone")
    return None


@dataclass(frozen=True)
class ServingPlan:
    """Label moves that make serving match the registry, applied in this order; empty when it
    already does. Moving `stable` serves that version alone, so nothing needs unloading then;
    loading a canary unloads any other unlabelled version."""

    stable: int | None = None  # point `stable` (and `canary`) at this version, loading it if needed
    canary: int | None = None  # then load this version as `canary`
    unload: int | None = None  # stop serving this version (`canary` falls back to `stable`)

    def __bool__(self) -> bool:
        return any(value is not None for value in (self.stable, self.canary, self.unload))


def serving_plan(production: int | None, in_review: int | None, labels: Mapping[str, int]) -> ServingPlan:
    """What serving must change so that `stable` is MLflow's production version and `canary`
    the version under review (or production when none is)."""
    if production is not None and labels.get("stable") != production:
        return ServingPlan(stable=production, canary=in_review)
    canary = labels.get("canary")
    if in_review is not None and canary != in_review:
        return ServingPlan(canary=in_review)
    if canary is not None and canary not in (production, in_review):
        return ServingPlan(unload=canary)
    return ServingPlan()


@dataclass(frozen=True)
class StoreGaps:
    stranded: tuple[int, ...]  # published, never registered, their MLflow run exists: register them
    unknown: tuple[int, ...]  # published by runs MLflow does not know: the tracking database was lost


def store_gaps(
    store_runs: Mapping[int, str | None], registered: Collection[int], known_runs: Collection[str]
) -> StoreGaps:
    """Compare the store's versions (number → the MLflow run id in its manifest) with MLflow."""
    missing = sorted(version for version in store_runs if version not in registered)
    stranded = tuple(v for v in missing if store_runs[v] in known_runs)
    unknown = tuple(v for v in missing if store_runs[v] not in known_runs)
    return StoreGaps(stranded, unknown)
