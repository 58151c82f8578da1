"""Conclude releases whose run is gone, and make serving match the registry.

Scheduled by a suspended retrain run at its review's deadline (so an unanswered review is
rejected on time, not at the next daily run); also runnable from the UI at any time.
"""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from railyard.settings import Settings
from tasks import release_steps


@flow(name="reconcile", log_prints=True)
def reconcile() -> list[str]:
    """Reject reviews that timed out or whose run crashed or was cancelled, unload their canaries,
    end MLflow runs left RUNNING by killed processes, and put `stable` back on MLflow's
    production version; each repair is printed."""
    settings = Settings()
    repaired = release_steps.repair_under_lock(settings, f"reconcile run {flow_run.get_id()}")
    for line in repaired or ["nothing to repair"]:
        print(line)
    return repaired
