"""The drift check before training (railyard/drift.py does the arithmetic): the window's statistics
against production's, or, with no production, the newest version's (the last run that published);
in MLflow (``drift/``: the statistics, the verdict, one picture; a metric per feature), a Prefect
artifact, and ``DataDrift`` past a block threshold unless RAILYARD_DRIFT_OVERRIDE says why not."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from railyard import drift, tracking
from railyard.loaders import RawDataset
from railyard.settings import Settings
from release.state import model_store, registry
from tasks.common import MINUTES, railyard_task

TAG_LIMIT = 5_000  # MLflow caps a run tag's value at 8,000 characters

DRIFT_TAG = "railyard.drift"  # on the MLflow run: pass, warn, block, unchecked
OVERRIDE_TAG = "railyard.drift_override"  # why a block was overridden
SUMMARY_TAG = "railyard.drift_summary"  # the features, distances and thresholds crossed


@railyard_task(name="window-statistics", timeout_seconds=30 * MINUTES)
def window_statistics(dataset: RawDataset, settings: Settings) -> dict:
    return drift.statistics(dataset.ratings, dataset.movies, settings.drift_span_days)


def reference_statistics(settings: Settings) -> tuple[str, dict] | None:
    """(what it is, the statistics) of production, else of the newest version; None when that
    version keeps none of this schema (published before statistics were kept) or there is no version."""
    store, model = model_store(settings), settings.model_name
    production = registry(settings).production_version()
    version, name = (
        (production, "production") if production is not None else (store.latest_version(model), "the newest")
    )
    if version is None:
        return None
    data = store.read_file(model, version, drift.STATISTICS_FILE)
    statistics = json.loads(data) if data is not None else {}
    return (f"{name} version {version}", statistics) if statistics.get("schema") == drift.SCHEMA else None


@railyard_task(name="drift-check", timeout_seconds=10 * MINUTES)
def check(statistics: dict, settings: Settings, run_id: str, work_dir: Path) -> drift.Verdict | None:
    """The verdict (None: nothing to compare with); raises ``DataDrift`` on a block not overridden
    (unless RAILYARD_DRIFT_BLOCK is off)."""
    tracking.log_dict(settings, run_id, statistics, "drift/statistics.json")
    found = reference_statistics(settings)
    if found is None:
        print("drift check: no earlier version keeps statistics to compare with: not checked")
        tracking.set_tags(settings, run_id, {DRIFT_TAG: "unchecked"})
        return None
    name, reference = found
    verdict = drift.compare(statistics, reference, settings.drift_limits(), name)
    if verdict.level == "block" and settings.drift_override:
        verdict = replace(verdict, override=settings.drift_override)
    tracking.log_dict(settings, run_id, verdict.as_dict(), "drift/verdict.json")
    tracking.log_metrics(settings, run_id, {f"drift_{m.feature}": m.distance for m in verdict.measures})
    tracking.log_artifact(settings, run_id, drift.plot(verdict, statistics, reference, work_dir / "drift.png"), "drift")
    tags = {DRIFT_TAG: verdict.level, SUMMARY_TAG: verdict.summary()[:TAG_LIMIT]}
    tags |= {OVERRIDE_TAG: verdict.override} if verdict.override else {}
    tracking.set_tags(settings, run_id, tags)
    overridden = f" (overridden: {verdict.override})" if verdict.override else ""
    create_markdown_artifact(
        key="data-drift",
        markdown=f"{verdict.summary()}{overridden}\n\n{drift.table_markdown(verdict)}",
        description=f"the window's data against {name}'s: {verdict.level}{overridden}",
    )
    print(f"drift check: {verdict.summary()}{overridden}")
    if verdict.level == "block" and not verdict.override and settings.drift_block:
        tracking.rename_run(settings, run_id, f"{settings.model_name}-drift-blocked")
        raise drift.DataDrift(verdict)
    return verdict
