"""Where a model's release state lives, and the one way to change it: the model store (versions,
the transition log, the release lock) and MLflow's registry (stages, and what a run records on
a version it carries). Nothing of it is in process memory: two runs, a worker and the CLI on
different machines see the same state, and a process that was killed leaves enough behind for
the next one to conclude its release (``release.reconcile``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from model_registry import ModelStore, open_store
from model_registry.stages import Stage, StageRegistry
from railyard.notify import notify
from railyard.processes import current_process, describe
from railyard.settings import Settings

REVIEW_RUN_TAG = "railyard.review_run"  # the flow run that put a version up for review (kept)
IN_FLIGHT = (Stage.CANDIDATE.value, Stage.STAGING.value)


def model_store(settings: Settings) -> ModelStore:
    return open_store(settings.resolved_store_uri, s3_endpoint_url=settings.s3_endpoint_url)


def registry(settings: Settings) -> StageRegistry:
    return StageRegistry(settings.resolved_tracking_uri, settings.model_name, model_store(settings))


@contextmanager
def release_lock(settings: Settings, holder: str, *, wait_s: float | None = None) -> Iterator:
    """Hold the model's release lock (waiting up to ``release_lock_wait_s`` for another release)."""
    owner = f"{holder} ({describe(current_process())})"
    wait = settings.release_lock_wait_s if wait_s is None else wait_s
    with model_store(settings).release_lock(
        settings.model_name, owner=owner, lease_s=settings.release_lock_lease_s, wait_s=wait
    ) as lease:
        yield lease


def stage_of(settings: Settings, version: int) -> str:
    return registry(settings).stage(version).value


def version_in_review_by(settings: Settings, flow_run_id: str | None) -> int | None:
    """The version this flow run put up for review (it is being resumed after suspending)."""
    if flow_run_id is None:
        return None
    found = [v for v, tags in registry(settings).all_tags().items() if tags.get(REVIEW_RUN_TAG) == flow_run_id]
    return max(found, default=None)


def release_owner(flow_run_id: str | None, mode: str, deadline: float | None = None) -> dict:
    """What a run records on a version it carries: ``mode`` "run" (working on it), "pause" (waits
    for its review in this process) or "suspend" (waits without a process)."""
    return {"flow_run_id": flow_run_id, "process": current_process(), "mode": mode, "deadline": deadline}


def record_rejection(
    settings: Settings, version: int, *, actor: str, reason: str, ending: str, flow_run_id: str | None
) -> None:
    """Reject a version and say so: MLflow's history, the log and the webhook."""
    stages = registry(settings)
    stages.transition(version, Stage.REJECTED, actor=actor, reason=reason, flow_run_id=flow_run_id)
    stages.set_release_run(version, None)
    stages.tag_release_ending(version, ending)
    message = f"{settings.model_name} version {version} was rejected ({ending}) by {actor}: {reason}"
    print(message)
    notify(settings, "rejected", message, version=version, actor=actor, ending=ending)
