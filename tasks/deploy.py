from infra import deploy
from model_registry import open_store
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


@railyard_task(name="resolve-serving", timeout_seconds=5 * MINUTES)
def serving_target(settings: Settings) -> deploy.ServingTarget:
    return deploy.resolve_target(settings)


@railyard_task(name="deploy-canary", timeout_seconds=15 * MINUTES, retries=2, retry_delay_seconds=[5, 30])
def deploy_canary(target: deploy.ServingTarget, settings: Settings, version: int) -> dict:
    """Verified copy into the model root, then TF Serving loads it as ``canary`` next to ``stable``."""
    store = open_store(settings.resolved_store_uri, s3_endpoint_url=settings.s3_endpoint_url)
    deploy.materialize(store, settings.model_name, version, target)
    with target.client() as client:
        return deploy.deploy_canary(client, target, settings.model_name, version, settings.serving_load_timeout_s)


@railyard_task(name="remove-canary", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=[5, 30])
def remove_canary(target: deploy.ServingTarget, settings: Settings, version: int) -> dict:
    with target.client() as client:
        return deploy.remove_canary(client, target, settings.model_name, version)


@railyard_task(name="make-stable", timeout_seconds=15 * MINUTES, retries=2, retry_delay_seconds=[5, 30])
def make_stable(target: deploy.ServingTarget, settings: Settings, version: int) -> dict:
    with target.client() as client:
        return deploy.make_stable(client, target, settings.model_name, version, settings.serving_load_timeout_s)


def serving_labels(target: deploy.ServingTarget, settings: Settings) -> dict[str, int]:
    return deploy.serving_labels(target, settings.model_name)
