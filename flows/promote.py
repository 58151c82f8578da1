"""Promote a smoke-tested (staging) version to production: `stable` moves, MLflow follows."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field
from prefect.runtime import flow_run

from railyard.settings import Settings
from tasks import deploy, release


@flow(name="promote", log_prints=True)
def promote(
    version: Annotated[int, Field(ge=1, description="Version to promote (must be in staging).")],
    reviewer: Annotated[str, Field(min_length=1, description="Who approves.")],
    comment: Annotated[str, Field(description="Why.")] = "",
) -> dict:
    """Serve ``version`` as ``stable`` (load, then relabel) and make it the MLflow production version.

    Args:
        version: the model version to promote; it must be in staging (smoke tests passed).
        reviewer: who approves, recorded in the audit trail.
        comment: why, recorded with the stage change.
    """
    settings = Settings()
    target = deploy.serving_target(settings)
    run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    labels = release.promote(target, settings, version, actor=reviewer, reason=comment or "approved", flow_run_id=run_id)
    print(f"{settings.model_name} version {version} is in production; serving labels {labels}")
    return {"model_name": settings.model_name, "version": version, "serving": labels}
