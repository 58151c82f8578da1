"""Promote a smoke-tested (staging) version to production: `stable` moves, MLflow follows."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.runtime import deployment, flow_run
from pydantic import Field

from flows.release_orchestration import apply_verdict_and_set_share
from model_registry.release_rules import Outcome, release_verdict
from railyard.settings import Settings
from release import review_runs
from release.decision import APPROVE, ReviewAnswer, with_name
from release.state import registry, release_lock
from tasks import serving


@flow(name="promote", log_prints=True)
def promote(
    version: Annotated[int, Field(ge=1, description="Version to promote (must be in staging).")],
    reviewer: Annotated[str, Field(pattern=r"\S", description="Who approves (recorded in the audit trail).")],
    comment: Annotated[str, Field(description="Why.")] = "",
) -> dict:
    """Serve ``version`` as ``stable`` (load, then relabel) and make it the MLflow production version.

    Args:
        version: the model version to promote; it must be in staging (smoke tests passed).
        reviewer: who approves, recorded in the audit trail; a run started from the deployment
            records the user the proxy authenticated instead, and this name beside the comment.
        comment: why, recorded with the stage change.
    """
    settings = Settings()
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    # Started from the deployment: the user the proxy authenticated; the typed name is kept as a note.
    actor = reviewer
    if deployment.get_id():
        actor = review_runs.who_started(settings.home, run_id, settings.started_record_wait_s)
        comment = with_name(comment, reviewer, actor)
    target = serving.serving_target(settings)
    with release_lock(settings, f"promote run {run_id}"):
        apply_verdict_and_set_share(
            target, settings, version, release_verdict(Outcome.APPROVED, comment, actor=actor), run_id
        )
    labels = serving.serving_labels(target, settings)
    # The retrain run waiting for this review wakes up, finds the decision made and ends with it.
    waiting = registry(settings).lineage(version).get("review_run")
    if waiting:
        try:
            review_runs.answer(waiting, ReviewAnswer(decision=APPROVE, reviewer=actor, comment=comment), settings.home)
        except Exception as error:  # noqa: BLE001 - it is not waiting any more: nothing to wake
            print(f"the retrain run {waiting} was not waiting for this review ({error})")
    return {"model_name": settings.model_name, "version": version, "serving": labels}
