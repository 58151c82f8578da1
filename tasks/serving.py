"""The serving steps as tasks: the serving target a run uses (starting the local server when it
is the target), the canary's deployment (infra/rollout/deploy.py), the labels served."""

from infra.local_server import background
from infra.rollout import deploy
from infra.tfserving import target as served
from infra.tfserving.client import ModelLoadError
from infra.tfserving.protocol import DEFAULT_GRPC_PORT, DEFAULT_REST_PORT
from railyard.settings import Settings
from release.state import model_store
from tasks.common import MINUTES, railyard_task

DEFAULT_REST_URL, DEFAULT_GRPC_TARGET = f"http://127.0.0.1:{DEFAULT_REST_PORT}", f"127.0.0.1:{DEFAULT_GRPC_PORT}"


@railyard_task(name="resolve-serving", timeout_seconds=5 * MINUTES)
def serving_target(settings: Settings) -> served.ServingTarget:
    if not settings.serving_replicas:  # the local server: this run needs it, so it starts it
        background.start_for(settings)
    target = deploy.resolve_target(settings)
    if not settings.serving_replicas and (target.rest, target.grpc) != (DEFAULT_REST_URL, DEFAULT_GRPC_TARGET):
        # Another home's server (or another program) held TF Serving's ports, or others were set.
        print(f"the local server listens on REST {target.rest} and gRPC {target.grpc} (not on 8501/8500)")
    return target


def _worth_retrying(task, task_run, state) -> bool:
    """A version TF Serving failed to load stays broken (it never retries that number): no retry."""
    return not isinstance(state.result(raise_on_failure=False), ModelLoadError)


@railyard_task(
    name="deploy-canary",
    timeout_seconds=15 * MINUTES,
    retries=1,
    retry_delay_seconds=10,
    retry_condition_fn=_worth_retrying,
)
def deploy_canary(target: served.ServingTarget, settings: Settings, version: int) -> dict:
    """Verified copy into the model root, then TF Serving loads it as ``canary`` next to ``stable``."""
    store = model_store(settings)
    deploy.materialize(store, settings.model_name, version, target)
    with target.client(attempts=settings.serving_attempts) as client:
        return deploy.deploy_canary(client, target, settings.model_name, version, settings.serving_load_timeout_s)


def serving_labels(target: served.ServingTarget, settings: Settings) -> dict[str, int]:
    return served.serving_labels(target, settings.model_name)
