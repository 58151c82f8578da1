"""The release's steps that call several tasks, shared by the flows (no flow of its own): a verdict
carried out with the canary's share of users it calls for, the gate's refusal, the canary release,
the review's request and its end, and the final state a release run ends in. Flow-level code, not
tasks, so that every task it calls (`supersede-older-releases`, `deploy-canary`, `smoke-tests`,
`record-stage`, `bake-canary`, `reject-version`, `promote-to-production`) shows as a task run of
its own in the Prefect UI. The plain logic is in ``release``; docs/release.md tells how a release
ends.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from functools import partial

from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State

from infra.tfserving.client import ModelLoadError
from infra.tfserving.target import ServingTarget
from model_registry import Manifest
from model_registry.release_rules import SYSTEM_ACTOR, Outcome, Verdict, release_verdict
from model_registry.stages import Stage
from railyard import contract, tracking
from railyard.errors import CanaryRolledBack, ModelRejected, SmokeTestsFailed
from railyard.moments import when
from railyard.notify import notify
from railyard.review import ReviewRequest, decision_line, review_markdown, waiting_line
from railyard.settings import Settings
from release import review_runs, traffic
from release.decision import ReviewAnswer
from release.state import registry, release_lock, release_owner
from release.verdicts import review_verdict
from tasks import release_steps, serving, smoke


def apply_verdict_and_set_share(
    target: ServingTarget, settings: Settings, version: int, verdict: Verdict, flow_run_id: str | None
) -> None:
    """Carry out a release verdict: reject (unloading the canary), promote, record staging, or
    leave the version a candidate that no run carries any more; then move the canary's share of
    live users to what the new stage calls for (``traffic.set_share_for_stage``)."""
    record = dict(actor=verdict.actor, reason=verdict.reason, flow_run_id=flow_run_id)
    if verdict.stage is Stage.REJECTED:
        release_steps.reject(target, settings, version, ending=verdict.ending, **record)
    elif verdict.stage is Stage.PRODUCTION:
        release_steps.make_production(target, settings, version, **record)
        registry(settings).tag_release_ending(version, Outcome.APPROVED.value)  # not a rollback's promotion
    elif verdict.stage is Stage.STAGING:  # reached only through passed smoke tests
        release_steps.record_stage(settings, version, Stage.STAGING.value, smoke_passed=True, **record)
    else:
        registry(settings).set_release_run(version, None)
    traffic.set_share_for_stage(settings, verdict.stage)


def refuse(
    settings: Settings,
    reason: str,
    existing: Manifest | None,
    run_id: str,
    prefect_run_id: str | None,
    *,
    locked: bool = False,
) -> None:
    """The gate said no: nothing is published (a stored, never released version is rejected,
    under the release lock, which the caller holds when ``locked``)."""
    tracking.set_tags(settings, run_id, {"railyard.stage": "rejected", "railyard.rejected_reason": reason})
    tracking.rename_run(settings, run_id, f"{settings.model_name}-not-blessed")
    if existing is not None:
        verdict = release_verdict(Outcome.NOT_BLESSED, reason)
        lock = nullcontext() if locked else release_lock(settings, f"retrain run {prefect_run_id}")
        with lock:
            apply_verdict_and_set_share(
                serving.serving_target(settings), settings, existing.version, verdict, prefect_run_id
            )
    raise ModelRejected(f"model not blessed, nothing published: {reason}")


def canary_release(
    settings: Settings, version: int, run_id: str, prefect_run_id: str | None, auto_approve: bool, gate_reason: str
):
    """Under the release lock: older pending releases give way, canary, smoke tests, staging (and
    production at once with ``auto_approve``). The serving target and the smoke report."""
    target = serving.serving_target(settings)  # serving down: the version stays a candidate for a re-run
    registry(settings).set_release_run(version, release_owner(prefect_run_id, "run"))
    for other in release_steps.supersede(target, settings, version, prefect_run_id):
        print(f"version {other} was superseded by version {version}")

    def carry_out(outcome: Outcome, reason: str, **by) -> None:
        apply_verdict_and_set_share(target, settings, version, release_verdict(outcome, reason, **by), prefect_run_id)

    try:
        traffic.hold_canary(settings, version)  # no user reaches the new canary before its smoke tests pass
        serving.deploy_canary(target, settings, version)
    except ModelLoadError as error:  # the model itself is broken: it never becomes servable
        carry_out(Outcome.LOAD_FAILED, str(error))
        raise
    except BaseException as error:  # serving or the store down, a timeout: the version waits for a re-run
        carry_out(Outcome.SERVING_DOWN, str(error))
        raise
    report = smoke.smoke_tests(target, settings, version, run_id)
    failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failures())
    carry_out(Outcome.SMOKE_PASSED if report.passed else Outcome.SMOKE_FAILED, failed)
    if not report.passed:
        raise SmokeTestsFailed(report.summary())
    # Its share of users now goes to the canary (staging called for it); over budget: rolled back.
    if (over_budget := release_steps.bake(settings, version)) is not None:
        carry_out(Outcome.BAKE_FAILED, over_budget)
        raise CanaryRolledBack(f"version {version} rolled back during the bake: {over_budget}")
    if auto_approve:
        carry_out(Outcome.APPROVED, gate_reason, actor=f"{SYSTEM_ACTOR} (auto_approve)")
    return target, report


def conclude_review(
    target: ServingTarget,
    settings: Settings,
    version: int,
    decision: ReviewAnswer | None,
    actor: str | None,
    flow_run_id: str | None,
) -> dict:
    """Carry out the review's verdict (``release.verdicts.review_verdict``) if the version still
    awaits it; the last history entry either way (someone else may have decided meanwhile)."""
    stages = registry(settings)
    if stages.stage(version) is Stage.STAGING:
        verdict = review_verdict(settings, decision, actor)
        apply_verdict_and_set_share(target, settings, version, verdict, flow_run_id)
    return stages.history(version)[-1]


def request_review(settings: Settings, request: ReviewRequest, suspend: bool) -> str:
    """Record how this run waits, ask for a review; the instructions shown with the form."""
    model, version, flow_run_id = request.model, request.version, request.flow_run
    stages = registry(settings)
    mode = "suspend" if suspend else "pause"
    stages.set_release_run(version, release_owner(flow_run_id, mode, request.deadline))
    stages.set_lineage(version, review_run=str(flow_run_id))
    instructions = review_markdown(request)
    create_markdown_artifact(
        key=review_runs.APPROVAL_ARTIFACT,
        markdown=instructions,
        description=f"{model} v{version}: approval needed by {when(request.deadline)}",
    )
    notify(settings, "approval_needed", f"{model} version {version} awaits approval", version=version)
    if suspend and (deadline_run := review_runs.schedule_deadline_check(request.deadline)) is not None:
        stages.set_lineage(version, deadline_run=deadline_run)
    print(waiting_line(model, version, flow_run_id, request.deadline))
    return instructions


def finish_review(
    settings: Settings,
    version: int,
    prefect_run_id: str | None,
    summary: dict,
    *,
    suspend: bool,
    instructions: str = "",
) -> State:
    """Wait for the decision (a suspended run ends here and starts again once answered), then
    apply it under the release lock unless someone decided meanwhile."""
    waiting = registry(settings).release_run(version) or {}
    deadline = waiting.get("deadline") or time.time() + settings.approval_timeout_s
    decision, actor = review_runs.await_decision(
        settings.model_name,
        version,
        instructions,
        deadline,
        suspend=suspend,
        home=settings.home,
        poll_s=settings.review_poll_s,
    )
    print(decision_line(settings.model_name, version, decision, actor))
    target = serving.serving_target(settings)
    with release_lock(settings, f"retrain run {prefect_run_id}"):
        last = conclude_review(target, settings, version, decision, actor, prefect_run_id)
    state = ending_state(settings, version, last, summary | serving_summary(target, settings))
    review_runs.cancel_deadline_check(registry(settings).lineage(version).get("deadline_run"), state.message)
    create_markdown_artifact(
        key=review_runs.APPROVAL_ARTIFACT,
        markdown=f"## Decided\n\n{state.message}",
        description=f"{settings.model_name} v{version}: {last['stage']} ({last['actor']})",
    )
    return state


def ending_state(settings: Settings, version: int, last: dict, summary: dict) -> State:
    """The run's final state says how the release ended: promoted, or rejected by whom and why."""
    stage, actor, reason = last["stage"], last["actor"], last["reason"]
    summary = summary | {"stage": stage, "decided_by": actor, "reason": reason}
    if stage == "production":
        return _ended(Completed, f"version {version} promoted to production by {actor}: {reason}", summary)
    if stage == "rejected":
        return _ended(partial(Completed, name="Rejected"), f"version {version} rejected by {actor}: {reason}", summary)
    return _ended(Completed, f"version {version} is {stage}", summary)


def nothing_new(settings: Settings, version: int, stage: str, summary: dict) -> State:
    message = f"nothing new to release: version {version} already holds this model (same data and code) and is {stage}"
    print(message)
    target = serving.serving_target(settings)
    return _ended(
        Completed, message, summary | {"model_version": version, "stage": stage} | serving_summary(target, settings)
    )


def _ended(state, message: str, summary: dict) -> State:
    """A final state whose message is also the summary's ``outcome`` (the CLI prints it)."""
    return state(message=message, data=summary | {"outcome": message})


def serving_summary(target: ServingTarget, settings: Settings) -> dict:
    labels = serving.serving_labels(target, settings)
    served_label = "stable" if "stable" in labels else "canary"
    return {
        "serving": {"rest": target.rest, "grpc": target.grpc, "labels": labels},
        "curl": contract.curl_line(target.rest, settings.model_name, served_label) if labels else None,
    }
