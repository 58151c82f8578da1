from pathlib import Path

import polars as pl
from prefect.artifacts import create_table_artifact

from railyard import evaluation, model, tracking
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


@railyard_task(name="evaluate", timeout_seconds=60 * MINUTES)
def evaluate(export_dir: Path, holdout: pl.DataFrame, settings: Settings, run_id: str, plot_path: Path) -> dict:
    """Score the exported SavedModel itself on the holdout: what is measured is what ships."""
    scores = model.predict_saved_model(export_dir, holdout.get_column("userId"), holdout.get_column("movieId"))
    result = evaluation.evaluate_scores(holdout, scores)
    tracking.log_metrics(settings, run_id, result.metrics)
    evaluation.plot_roc(result, plot_path, title=f"{settings.model_name}: holdout ROC")
    tracking.log_artifact(settings, run_id, plot_path, "evaluation")
    return result.metrics


@railyard_task(name="evaluation-gate", timeout_seconds=5 * MINUTES)
def gate(metrics: dict, settings: Settings, run_id: str) -> evaluation.GateDecision:
    decision = evaluation.absolute_gate(metrics, min_auc=settings.min_auc, max_logloss=settings.max_logloss)
    tracking.log_dict(settings, run_id, decision.as_dict(), "evaluation/gate_decision.json")
    tracking.set_tags(settings, run_id, {"railyard.blessed": str(decision.blessed).lower()})
    create_table_artifact(
        key="evaluation-gate",
        table=[
            {"check": c.name, "value": round(c.value, 5), "threshold": f"{c.direction} {c.threshold}", "passed": c.passed}
            for c in decision.checks
        ],
        description=f"blessed={decision.blessed}: {decision.reason}",
    )
    return decision
