from pathlib import Path

from prefect.artifacts import create_table_artifact

from railyard import drift, evaluation, tracking
from railyard.features import FeatureSet
from railyard.settings import Settings
from release.state import model_store
from tasks.common import MINUTES, railyard_task


@railyard_task(name="prepare-holdout", timeout_seconds=30 * MINUTES)
def prepare_holdout(feature_set: FeatureSet) -> evaluation.Holdout:
    """The holdout as the candidate and production are both scored on it: inputs and baselines once."""
    holdout = evaluation.Holdout.of(feature_set.holdout, feature_set.priors)
    holdout.inputs  # computed here, in the task that says so, not inside the first evaluation
    return holdout


@railyard_task(name="evaluate", timeout_seconds=60 * MINUTES)
def evaluate(export_dir: Path, holdout: evaluation.Holdout, settings: Settings, run_id: str, plot_path: Path) -> dict:
    """The exported SavedModel itself, scored on the holdout: what is measured is what ships."""
    result = evaluation.evaluate_saved_model(export_dir, holdout)
    tracking.log_metrics(settings, run_id, result.metrics)
    evaluation.plot_roc(result, plot_path, title=f"{settings.model_name}: holdout ROC")
    tracking.log_artifact(settings, run_id, plot_path, "evaluation")
    return result.metrics


@railyard_task(name="evaluate-production", timeout_seconds=60 * MINUTES, retries=2, retry_delay_seconds=[10, 60])
def evaluate_production(
    version: int, holdout: evaluation.Holdout, settings: Settings, run_id: str, work_dir: Path
) -> dict:
    """The production model, fetched verified from the store, scored on the same fresh holdout."""
    store = model_store(settings)
    local = store.download(settings.model_name, version, work_dir / f"production-{version}")
    metrics = evaluation.evaluate_saved_model(local, holdout).metrics
    tracking.log_metrics(settings, run_id, {f"production_{name}": value for name, value in metrics.items()})
    return metrics


@railyard_task(name="evaluation-gate", timeout_seconds=5 * MINUTES)
def gate(
    metrics: dict,
    settings: Settings,
    run_id: str,
    production_metrics: dict | None,
    production_version: int | None,
    drift_verdict: drift.Verdict | None = None,
) -> evaluation.GateDecision:
    """The gate's decision, its table (``evaluation.gate_table``) and beside it the model, both
    baselines and production on the same holdout rows, in the Prefect UI and in MLflow."""
    decision = evaluation.gate(
        metrics, settings.gate_thresholds(), baseline_metrics=production_metrics, baseline_version=production_version
    )
    figures = evaluation.side_by_side(metrics, production_metrics, production_version)
    tracking.log_dict(settings, run_id, decision.as_dict(), "evaluation/gate_decision.json")
    tracking.log_dict(settings, run_id, {"rows": figures}, "evaluation/side_by_side.json")
    tracking.set_tags(settings, run_id, {"railyard.blessed": str(decision.blessed).lower()})
    create_table_artifact(
        key="evaluation-gate",
        table=evaluation.gate_table(decision, drift_verdict),
        description=f"blessed={decision.blessed}: {decision.reason}",
    )
    create_table_artifact(
        key="evaluation-side-by-side",
        table=figures,
        description=f"{settings.model_name}: the model, both baselines and production on the same holdout rows",
    )
    return decision
