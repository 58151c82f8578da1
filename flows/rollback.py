"""Put an earlier production version back on `stable`, recording why."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.runtime import deployment, flow_run
from pydantic import Field

from railyard.errors import SEE_STATUS, Refused
from railyard.settings import Settings
from release import review_runs, traffic
from release.decision import with_name
from release.reconcile import repair_release_state
from release.state import release_lock
from tasks import release_steps, serving


class RollbackRefused(Refused):
    """There is nothing legal to roll back to."""

    next_step = SEE_STATUS


@flow(name="rollback", log_prints=True)
def rollback(
    to_version: Annotated[
        int | None, Field(ge=1, description="Version to restore; empty = the previous production.")
    ] = None,
    reason: Annotated[str, Field(min_length=1, description="Why (recorded).")] = "manual rollback",
    actor: Annotated[str, Field(min_length=1, description="Who asks (recorded).")] = "operator",
) -> dict:
    """Serve an earlier production version as ``stable`` again and make it MLflow's production version.

    Args:
        to_version: the version to restore; empty = the production version before the current one.
            It must have been in production before and must still be in the model store.
        reason: why, recorded in the audit trail.
        actor: who asks for the rollback; a run started from the deployment records the user the
            proxy authenticated instead, and this name beside the reason.
    """
    settings = Settings()
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    if deployment.get_id():  # from the UI: the user the proxy authenticated, the typed name a note
        user = review_runs.who_started(settings.home, run_id, settings.started_record_wait_s)
        actor, reason = user, with_name(reason, actor, user)
    target = serving.serving_target(settings)
    with release_lock(settings, f"rollback run {run_id}"):
        version = to_version if to_version is not None else release_steps.previous_production_version(settings)
        if version is None:
            raise RollbackRefused(f"{settings.model_name} has no earlier production version to roll back to")
        release_steps.make_production(
            target, settings, version, actor=actor, reason=f"rollback: {reason}", flow_run_id=run_id
        )
        traffic.set_share(settings, 0.0)  # the ranking service sends everyone to stable
        repair_release_state(settings)  # a version still under review gets its canary back
    labels = serving.serving_labels(target, settings)
    print(f"rolled {settings.model_name} back to version {version}; serving labels {labels}")
    return {"model_name": settings.model_name, "version": version, "serving": labels}
