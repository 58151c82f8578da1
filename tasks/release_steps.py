"""The release steps as Prefect tasks (retries, timeouts, and a task run each in the UI), and the
verdicts the release flow applies with them. The state they change and its rules: ``release``
(below), ``model_registry.release_rules``. See docs/release.md.
"""

from __future__ import annotations

import logging

from infra.rollout import deploy
from infra.tfserving import target as served
from model_registry.release_rules import SYSTEM_ACTOR, Outcome, Verdict, release_verdict, review_outcome
from model_registry.stages import STAGE_TAG, Stage
from railyard.notify import notify
from railyard.settings import Settings
from release import review_runs, traffic
from release.decision import REJECT, ReviewAnswer, with_name
from release.reconcile import repair_release_state
from release.state import IN_FLIGHT, REVIEW_RUN_TAG, model_store, record_rejection, registry, release_lock
from tasks.common import MINUTES, railyard_task

log = logging.getLogger("railyard.release")


@railyard_task(name="reconcile-release-state", timeout_seconds=30 * MINUTES)
def repair_under_lock(settings: Settings, holder: str) -> list[str]:
    with release_lock(settings, holder):
        return repair_release_state(settings)


# -- the steps of one release ----------------------------------------------------------------


@railyard_task(name="register-model-version", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def register(settings: Settings, version: int, source: str, run_id: str, lineage: dict[str, str]) -> int:
    """Store version N becomes MLflow version N, a candidate with its lineage (idempotent)."""
    description = f"store version {version} at {source}"
    return registry(settings).register(version, source, run_id, lineage, description=description)


@railyard_task(name="record-stage", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def record_stage(
    settings: Settings,
    version: int,
    stage: str,
    *,
    actor: str,
    reason: str,
    flow_run_id: str | None,
    smoke_passed: bool | None = None,
) -> dict:
    return registry(settings).transition(
        version, Stage(stage), actor=actor, reason=reason, flow_run_id=flow_run_id, smoke_passed=smoke_passed
    )


@railyard_task(name="reject-version", timeout_seconds=10 * MINUTES, retries=1, retry_delay_seconds=10)
def reject(
    target: served.ServingTarget,
    settings: Settings,
    version: int,
    *,
    actor: str,
    reason: str,
    ending: str,
    flow_run_id: str | None,
) -> None:
    """Unload the version if it is served (stable keeps answering), then reject it."""
    registry(settings).check_transition(version, Stage.REJECTED)
    if version in served.served_version_numbers(target, settings.model_name):
        with target.client(attempts=settings.serving_attempts) as client:
            deploy.remove_canary(client, target, settings.model_name, version)
    record_rejection(settings, version, actor=actor, reason=reason, ending=ending, flow_run_id=flow_run_id)


@railyard_task(name="supersede-older-releases", timeout_seconds=10 * MINUTES)
def supersede(target: served.ServingTarget, settings: Settings, version: int, flow_run_id: str | None) -> list[int]:
    """Older versions still awaiting review (or never deployed) give way to this newer one.

    A waiting retrain run is answered "reject" by Railyard, so it wakes up and ends, recording
    why; its version is rejected here at once so that this release can go on.
    """
    superseded = []
    for other, tags in sorted(registry(settings).all_tags().items()):
        if other >= version or tags.get(STAGE_TAG) not in IN_FLIGHT:
            continue
        verdict = release_verdict(Outcome.SUPERSEDED, str(version))
        reject.fn(
            target,
            settings,
            other,
            actor=verdict.actor,
            reason=verdict.reason,
            ending=verdict.ending,
            flow_run_id=flow_run_id,
        )
        waiting_run = tags.get(REVIEW_RUN_TAG) if tags[STAGE_TAG] == Stage.STAGING.value else None
        if waiting_run:
            decision = ReviewAnswer(decision=REJECT, reviewer=SYSTEM_ACTOR, comment=verdict.reason)
            try:
                review_runs.answer(waiting_run, decision, settings.home, via="railyard")
            except Exception as error:  # noqa: BLE001 - the run is gone: reconcile closes its review
                log.info("could not answer the review of flow run %s: %s", waiting_run, error)
        superseded.append(other)
    return superseded


@railyard_task(name="promote-to-production", timeout_seconds=20 * MINUTES)
def make_production(
    target: served.ServingTarget, settings: Settings, version: int, *, actor: str, reason: str, flow_run_id: str | None
) -> dict:
    """Checks the stage change is legal, serves the version as ``stable``, then records it.

    The version is copied into the model root first if it is not there (a rollback to an
    archived version); the previous production version is archived by the registry.
    """
    stages = registry(settings)
    stages.check_transition(version, Stage.PRODUCTION)
    deploy.materialize(model_store(settings), settings.model_name, version, target)
    with target.client(attempts=settings.serving_attempts) as client:
        labels = deploy.make_stable(client, target, settings.model_name, version, settings.serving_load_timeout_s)
    stages.transition(version, Stage.PRODUCTION, actor=actor, reason=reason, flow_run_id=flow_run_id)
    stages.set_release_run(version, None)
    message = f"{settings.model_name} version {version} promoted to production by {actor} ({reason})"
    print(message)
    notify(settings, "promoted", message, version=version, actor=actor)
    return labels


def conclude_review(
    target: served.ServingTarget,
    settings: Settings,
    version: int,
    decision: ReviewAnswer | None,
    actor: str | None,
    flow_run_id: str | None,
) -> dict:
    """Apply the reviewer's decision (None: the approval window ran out) if the version still
    awaits it; the last history entry either way (someone else may have decided meanwhile).
    ``actor`` is who a signed record proves sent it; the name typed in the form is kept only in
    the reason."""
    stages = registry(settings)
    if stages.stage(version) is Stage.STAGING:
        if decision is None:
            verdict = release_verdict(Outcome.TIMED_OUT, f"{settings.approval_timeout_s} s")
        else:
            reason = with_name(decision.comment, decision.reviewer, actor)
            verdict = release_verdict(review_outcome(decision.decision), reason, actor=actor)
        apply_verdict(target, settings, version, verdict, flow_run_id)
    return stages.history(version)[-1]


def apply_verdict(
    target: served.ServingTarget, settings: Settings, version: int, verdict: Verdict, flow_run_id: str | None
) -> None:
    """Carry out a release verdict: reject (unloading the canary), promote, record staging, or
    leave the version a candidate that no run carries any more."""
    record = dict(actor=verdict.actor, reason=verdict.reason, flow_run_id=flow_run_id)
    if verdict.stage is Stage.REJECTED:
        reject(target, settings, version, ending=verdict.ending, **record)
    elif verdict.stage is Stage.PRODUCTION:
        make_production(target, settings, version, **record)
        registry(settings).tag_release_ending(version, Outcome.APPROVED.value)  # not a rollback's promotion
    elif verdict.stage is Stage.STAGING:  # reached only through passed smoke tests
        record_stage(settings, version, Stage.STAGING.value, smoke_passed=True, **record)
    else:
        registry(settings).set_release_run(version, None)
    traffic.set_share_for_stage(settings, verdict.stage)


def version_in_review_by(settings: Settings, flow_run_id: str | None) -> int | None:
    """The version this flow run put up for review (it is being resumed after suspending)."""
    if flow_run_id is None:
        return None
    found = [v for v, tags in registry(settings).all_tags().items() if tags.get(REVIEW_RUN_TAG) == flow_run_id]
    return max(found, default=None)


@railyard_task(name="read-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def production_version(settings: Settings) -> int | None:
    return registry(settings).production_version()


def stage_of(settings: Settings, version: int) -> str:
    return registry(settings).stage(version).value


@railyard_task(name="read-previous-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def previous_production_version(settings: Settings) -> int | None:
    return registry(settings).previous_production()


@railyard_task(name="bake-canary", timeout_seconds=24 * 60 * MINUTES)
def bake(settings: Settings, version: int) -> str | None:
    return traffic.bake_canary(settings, version)
