"""The online feature store as the retrain sees it: filled from validated batch data when it is
empty, and compared with the offline aggregates of that data at every run."""

from dataclasses import asdict

from prefect.artifacts import create_markdown_artifact

from infra.online_store.consistency import check_store
from infra.online_store.store import OnlineStore, connect
from railyard import tracking
from railyard.loaders import RawDataset
from railyard.settings import Settings
from railyard.skew import FeatureSkew, SkewReport
from tasks.common import MINUTES, railyard_task

SKEW_METRIC_PREFIX = "online_skew_share_"  # then the entity: users, movies


@railyard_task(name="online-store-skew", timeout_seconds=30 * MINUTES, retries=2, retry_delay_seconds=[10, 60])
def check_skew(dataset: RawDataset, settings: Settings, run_id: str) -> dict:
    store = connect(settings)
    built, reports = check_store(store, dataset.ratings, dataset.movies, settings.skew_sample_size, settings.seed)
    return record_skew(store, built, reports, settings, run_id)


def record_skew(
    store: OnlineStore, built: bool, reports: tuple[SkewReport, ...], settings: Settings, run_id: str
) -> dict:
    """The skew check's figures in MLflow and a Prefect artifact; ``FeatureSkew`` past the budget."""
    if built:
        print("the online store was empty: built it from this run's validated data")
    state = store.state()
    metrics = {f"{SKEW_METRIC_PREFIX}{report.entity}s": report.share for report in reports}
    metrics["online_events_applied"] = state["events_applied"]
    tracking.log_metrics(settings, run_id, metrics)
    tracking.log_dict(
        settings, run_id, {"store": state, "reports": [asdict(report) for report in reports]}, "online_store/skew.json"
    )
    lines = "\n".join(f"- {report.summary()}" for report in reports)
    create_markdown_artifact(
        key="online-store-skew",
        markdown=f"Online store vs. offline aggregates (as of the store's last event {state['last_event_ts']}):\n\n{lines}",
        description=f"largest share allowed: {settings.max_skew_share:.2%}",
    )
    skewed = [report for report in reports if report.share > settings.max_skew_share]
    if skewed:
        raise FeatureSkew(
            "the online store's features differ from the offline ones beyond "
            f"RAILYARD_MAX_SKEW_SHARE={settings.max_skew_share}: " + "; ".join(r.summary() for r in skewed)
        )
    return metrics
