"""Stage changes of a model version: MLflow bookkeeping and the serving labels, moved together."""

from infra import deploy
from model_registry import open_store
from model_registry.stages import Stage, StageRegistry
from railyard.notify import notify
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


def registry(settings: Settings) -> StageRegistry:
    return StageRegistry(settings.resolved_tracking_uri, settings.model_name)


@railyard_task(name="register-model-version", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def register(settings: Settings, version: int, source: str, run_id: str, lineage: dict[str, str]) -> int:
    """Store version N becomes MLflow version N, a candidate with its lineage."""
    description = f"store version {version} at {source}"
    return registry(settings).register(version, source, run_id, lineage, description=description)


@railyard_task(name="record-stage", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def record_stage(
    settings: Settings, version: int, stage: str, *, actor: str, reason: str, flow_run_id: str | None,
    smoke_passed: bool | None = None,
) -> dict:  # fmt: skip
    return registry(settings).transition(
        version, Stage(stage), actor=actor, reason=reason, flow_run_id=flow_run_id, smoke_passed=smoke_passed
    )


@railyard_task(name="promote-to-production", timeout_seconds=20 * MINUTES)
def promote(
    target: deploy.ServingTarget, settings: Settings, version: int, *, actor: str, reason: str, flow_run_id: str | None
) -> dict:
    """Checks the stage change is legal, serves the version as ``stable``, then records it.

    The version is copied into the model root first if it is not there (a rollback to an
    archived version); the previous production version is archived by the registry.
    """
    stages = registry(settings)
    stages.check_transition(version, Stage.PRODUCTION)
    store = open_store(settings.resolved_store_uri, s3_endpoint_url=settings.s3_endpoint_url)
    deploy.materialize(store, settings.model_name, version, target)
    with target.client(attempts=settings.serving_attempts) as client:
        labels = deploy.make_stable(client, target, settings.model_name, version, settings.serving_load_timeout_s)
    stages.transition(version, Stage.PRODUCTION, actor=actor, reason=reason, flow_run_id=flow_run_id)
    stages.set_lineage(version, serving_label="stable")
    notify(settings, "promoted", f"{settings.model_name} version {version} is in production ({reason})", version=version, actor=actor)
    return labels


@railyard_task(name="read-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def production_version(settings: Settings) -> int | None:
    return registry(settings).production_version()


def stage_of(settings: Settings, version: int) -> str:
    return registry(settings).stage(version).value


@railyard_task(name="read-previous-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def previous_production_version(settings: Settings) -> int | None:
    return registry(settings).previous_production()
