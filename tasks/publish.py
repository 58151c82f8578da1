from pathlib import Path

from model_registry import Manifest
from model_registry.store import PublishedVersion
from railyard import tracking
from railyard.settings import Settings
from release.state import model_store
from tasks.common import MINUTES, railyard_task


@railyard_task(name="publish-to-store", timeout_seconds=60 * MINUTES, retries=2, retry_delay_seconds=[10, 60])
def publish(
    export_dir: Path,
    settings: Settings,
    run_id: str,
    metrics: dict,
    data_fingerprint: str,
    code_version: str,
    model_kind: str,
) -> PublishedVersion:
    published = model_store(settings).publish(
        settings.model_name,
        export_dir,
        metadata={
            "mlflow_run_id": run_id,
            "metrics": metrics,
            "data_fingerprint": data_fingerprint,
            "code_version": code_version,
            "model_kind": model_kind,
        },
    )
    tracking.set_tags(
        settings, run_id, {"railyard.store_uri": published.uri, "railyard.store_version": published.version}
    )
    return published


@railyard_task(name="find-published-version", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def find_published(settings: Settings, data_fingerprint: str, code_version: str) -> Manifest | None:
    """The stored version already holding the model of this data and code, if any."""
    return model_store(settings).find(settings.model_name, data_fingerprint, code_version)


@railyard_task(name="fetch-stored-version", timeout_seconds=30 * MINUTES, retries=2, retry_delay_seconds=[10, 60])
def fetch(settings: Settings, version: int, dest: Path) -> Path:
    """A verified copy of a stored version, to evaluate what will ship."""
    return model_store(settings).download(settings.model_name, version, dest)


def version_uri(settings: Settings, version: int) -> str:
    return model_store(settings).version_uri(settings.model_name, version)
