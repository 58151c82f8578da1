"""What a release verdict does to one version, as plain functions: reject it (its canary
unloaded), promote it (served as ``stable``, then recorded), supersede the older versions still in
flight (answering the reviews they wait for), and the verdict a review's answer comes to. The
tasks of ``tasks/release_steps.py`` give each a task run; the rules are in
``model_registry.release_rules``. See docs/release.md.
"""

from __future__ import annotations

import logging

from infra.rollout import deploy
from infra.tfserving import target as served
from model_registry.release_rules import SYSTEM_ACTOR, Outcome, Verdict, release_verdict, review_outcome
from model_registry.stages import STAGE_TAG, Stage
from railyard.notify import notify
from railyard.settings import Settings
from release import review_runs
from release.decision import REJECT, ReviewAnswer, with_name
from release.state import IN_FLIGHT, REVIEW_RUN_TAG, model_store, record_rejection, registry

log = logging.getLogger("railyard.release")


def reject_version(
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


def supersede_older(
    target: served.ServingTarget, settings: Settings, version: int, flow_run_id: str | None
) -> list[int]:
    """Older versions still awaiting review (or never deployed) give way to this newer one.

    A waiting retrain run is answered "reject" by Railyard, so it wakes up and ends, recording
    why; its version is rejected here at once so that this release can go on.
    """
    superseded = []
    for other, tags in sorted(registry(settings).all_tags().items()):
        if other >= version or tags.get(STAGE_TAG) not in IN_FLIGHT:
            continue
        verdict = release_verdict(Outcome.SUPERSEDED, str(version))
        reject_version(
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


def promote_to_production(
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


def review_verdict(settings: Settings, decision: ReviewAnswer | None, actor: str | None) -> Verdict:
    """The verdict of a review: the reviewer's decision, or timed out (``decision`` None: the
    approval window ran out). ``actor`` is who a signed record proves sent it; the name typed in
    the form is kept only in the reason."""
    if decision is None:
        return release_verdict(Outcome.TIMED_OUT, f"{settings.approval_timeout_s} s")
    reason = with_name(decision.comment, decision.reviewer, actor)
    return release_verdict(review_outcome(decision.decision), reason, actor=actor)
