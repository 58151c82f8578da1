"""The release steps as Prefect tasks: retries, timeouts, and a task run each in the UI, where the
reviewer watches them. What they do is plain code in ``release`` (``verdicts``, ``state``,
``traffic``, ``reconcile``); the flows combine them (``flows/release_orchestration.py``). See
docs/release.md.
"""

from __future__ import annotations

from model_registry.stages import Stage
from railyard.settings import Settings
from release import traffic, verdicts
from release.reconcile import repair_release_state
from release.state import registry, release_lock
from tasks.common import MINUTES, railyard_task


@railyard_task(name="reconcile-release-state", timeout_seconds=30 * MINUTES)
def repair_under_lock(settings: Settings, holder: str) -> list[str]:
    with release_lock(settings, holder):
        return repair_release_state(settings)


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


# What a verdict does to a version (``release.verdicts``), each a task run of its own.
reject = railyard_task(name="reject-version", timeout_seconds=10 * MINUTES, retries=1, retry_delay_seconds=10)(
    verdicts.reject_version
)
supersede = railyard_task(name="supersede-older-releases", timeout_seconds=10 * MINUTES)(verdicts.supersede_older)
make_production = railyard_task(name="promote-to-production", timeout_seconds=20 * MINUTES)(
    verdicts.promote_to_production
)


@railyard_task(name="read-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def production_version(settings: Settings) -> int | None:
    return registry(settings).production_version()


@railyard_task(name="read-previous-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def previous_production_version(settings: Settings) -> int | None:
    return registry(settings).previous_production()


@railyard_task(name="bake-canary", timeout_seconds=24 * 60 * MINUTES)
def bake(settings: Settings, version: int) -> str | None:
    return traffic.bake_canary(settings, version)
