from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from railyard import validation
from railyard.features import FeatureSet
from railyard.loaders import RawDataset
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


def _publish(reports: tuple[validation.ValidationReport, ...]) -> None:
    """Show every suite's outcome in the Prefect UI, then stop the flow if any failed."""
    for report in reports:
        create_markdown_artifact(
            key=f"validation-{report.suite.replace('_', '-')}",
            markdown=f"```\n{report.summary()}\n```\n\nHTML report: `{report.html_report}`",
            description=f"Great Expectations suite {report.suite}",
        )
    validation.raise_for_failures(*reports)


@railyard_task(name="validate-raw-data", timeout_seconds=30 * MINUTES)
def validate_raw(dataset: RawDataset, settings: Settings, report_dir: Path) -> None:
    """The raw ratings' suite, row by row on the files that did not pass it before (``validation.validate_new_ratings``)."""
    bounds, record = settings.validation_bounds(), settings.raw_validation_record
    _publish((validation.validate_new_ratings(dataset.ratings, dataset.file_rows, bounds, report_dir, record),))


@railyard_task(name="validate-features", timeout_seconds=30 * MINUTES)
def validate_features(feature_set: FeatureSet, settings: Settings, report_dir: Path) -> None:
    _publish(
        validation.validate_features(
            feature_set.train, feature_set.holdout, feature_set.cutoff_ts, settings.validation_bounds(), report_dir
        )
    )
