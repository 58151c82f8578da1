from pathlib import Path

from model_registry import open_store
from model_registry.store import PublishedVersion
from railyard import tracking
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


@railyard_task(name="publish-to-store", timeout_seconds=60 * MINUTES, retries=2, retry_delay_seconds=[10, 60])
def publish(
    export_dir: Path, settings: Settings, run_id: str, metrics: dict, data_fingerprint: str, code_version: str
) -> PublishedVersion:
    store = open_store(settings.resolved_store_uri, s3_endpoint_url=settings.s3_endpoint_url)
    published = store.publish(
        settings.model_name,
        export_dir,
        metadata={
            "mlflow_run_id": run_id,
            "metrics": metrics,
            "data_fingerprint": data_fingerprint,
            "code_version": code_version,
        },
    )
    tracking.set_tags(
        settings, run_id, {"railyard.store_uri": published.uri, "railyard.store_version": published.version}
    )
    return published

