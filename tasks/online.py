"""The online feature store as the retrain sees it: filled from validated batch data when it is
empty (in the background, while the run trains), and compared with the offline aggregates of
that data at every run."""

from dataclasses import asdict
from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from infra.online_store.background_fill import BackgroundFill
from infra.online_store.consistency import check_store
from infra.online_store.store import OnlineStore, connect
from railyard import tracking
from railyard.loaders import RawDataset
from railyard.settings import Settings
from railyard.skew import FeatureSkew, SkewReport
from tasks.common import MINUTES, railyard_task

SKEW_METRIC_PREFIX = "online_skew_share_"  # then the entity: users, movies
FILL_TIMEOUT_S = 30 * MINUTES


@railyard_task(name="online-store-skew", timeout_seconds=30 * MINUTES, retries=2, retry_delay_seconds=[10, 60])
def check_skew(dataset: RawDataset, settings: Settings, run_id: str, run_dir: Path) -> BackgroundFill | None:
    """The skew check; or, when the store is empty, its fill started in the background (the
    check runs there once the store is full: ``await_fill``)."""
    store = connect(settings)
    if store.namespace() is None:
        print("the online store is empty: filling it from this run's validated data in the background")
        return BackgroundFill.start(
            dataset.ratings, dataset.movies, run_dir / "online-fill", settings.skew_sample_size, settings.seed
        )
    built, reports = check_store(store, dataset.ratings, dataset.movies, settings.skew_sample_size, settings.seed)
    record_skew(store, built, reports, settings, run_id)
    return None


@railyard_task(name="online-store-fill", timeout_seconds=FILL_TIMEOUT_S + MINUTES)
def await_fill(fill: BackgroundFill, settings: Settings, run_id: str) -> dict:
    """The background fill's end, and its skew check recorded as ``check_skew`` records one."""
    built, reports = fill.wait(FILL_TIMEOUT_S)
    return record_skew(connect(settings), built, reports, settings, run_id)


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
