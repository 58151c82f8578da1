"""Holdout evaluation of an exported model and the evaluation gate's threshold checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from railyard.configs import GateThresholds

# Clipping keeps log loss finite for a score of exactly 0 or 1.
_EPS = 1e-7


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]  # auc, pr_auc, logloss, accuracy, baseline_auc, rows, positive_rate
    labels: np.ndarray
    scores: np.ndarray
    baseline_scores: np.ndarray


def classification_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), _EPS, 1 - _EPS)
    if len(np.unique(labels)) < 2:
        raise ValueError("the holdout has a single class: AUC is undefined; widen the holdout window")
    logloss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "pr_auc": float(average_precision_score(labels, scores)),
        "logloss": float(logloss),
        "accuracy": float(np.mean((scores >= 0.5) == (labels == 1))),
    }


def evaluate_scores(holdout: pl.DataFrame, scores: np.ndarray) -> Evaluation:
    """Metrics of ``scores`` on the holdout, beside a non-learned popularity baseline.

    The baseline scores each row by the movie's positive rate in the training data, which is the
    holdout's ``movie_pos`` column: holdout features are the cut-off snapshot of training data.
    """
    labels = holdout.get_column("label").to_numpy()
    baseline = holdout.get_column("movie_pos").to_numpy()
    metrics = classification_metrics(labels, scores)
    metrics["baseline_auc"] = classification_metrics(labels, baseline)["auc"]
    metrics["rows"] = float(len(labels))
    metrics["positive_rate"] = float(np.mean(labels))
    return Evaluation(metrics=metrics, labels=labels, scores=np.asarray(scores).reshape(-1), baseline_scores=baseline)


def evaluate_saved_model(saved_model_dir: Path, holdout: pl.DataFrame) -> Evaluation:
    """Score the exported SavedModel itself on the holdout: what is measured is what ships."""
    from railyard.model import predict_saved_model

    scores = predict_saved_model(saved_model_dir, holdout.get_column("userId"), holdout.get_column("movieId"))
    return evaluate_scores(holdout, scores)


def plot_roc(evaluation: Evaluation, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    figure, axes = plt.subplots(figsize=(5, 5))
    for name, scores, auc in (
        ("model", evaluation.scores, evaluation.metrics["auc"]),
        ("popularity baseline", evaluation.baseline_scores, evaluation.metrics["baseline_auc"]),
    ):
        fpr, tpr, _ = roc_curve(evaluation.labels, scores)
        axes.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axes.legend(loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


@dataclass(frozen=True)
class ThresholdCheck:
    name: str
    value: float
    threshold: float
    direction: str  # ">=" or "<="
    passed: bool


@dataclass(frozen=True)
class GateDecision:
    blessed: bool
    checks: tuple[ThresholdCheck, ...]
    reason: str
    baseline_version: int | None = None  # the production version scored beside the challenger
    baseline_metrics: dict[str, float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _check(name: str, value: float, threshold: float | None, direction: str) -> ThresholdCheck | None:
    if threshold is None:
        return None
    passed = value >= threshold if direction == ">=" else value <= threshold
    return ThresholdCheck(name=name, value=float(value), threshold=threshold, direction=direction, passed=passed)


def gate(
    metrics: dict[str, float],
    thresholds: GateThresholds,
    *,
    baseline_metrics: dict[str, float] | None = None,
    baseline_version: int | None = None,
) -> GateDecision:
    """TFX-style blessing: absolute thresholds, plus change thresholds when a production model
    was scored on the same holdout. Without any threshold, refuse (never bless by accident)."""
    candidates = [
        _check("auc", metrics["auc"], thresholds.min_auc, ">="),
        _check("logloss", metrics["logloss"], thresholds.max_logloss, "<="),
    ]
    if baseline_metrics is not None:
        candidates += [
            _check(
                "auc_change_vs_production", metrics["auc"] - baseline_metrics["auc"], thresholds.min_auc_change, ">="
            ),
            _check(
                "logloss_relative_change_vs_production",
                (metrics["logloss"] - baseline_metrics["logloss"]) / baseline_metrics["logloss"],
                thresholds.max_logloss_change_relative,
                "<=",
            ),
        ]
    checks = tuple(check for check in candidates if check is not None)
    decide = partial(GateDecision, checks=checks, baseline_version=baseline_version, baseline_metrics=baseline_metrics)
    if not checks:
        return decide(blessed=False, reason="no thresholds configured: refusing to bless")
    failed = [c for c in checks if not c.passed]
    if failed:
        return decide(
            blessed=False, reason="; ".join(f"{c.name}={c.value:.4f} fails {c.direction} {c.threshold}" for c in failed)
        )
    if baseline_metrics is None:
        return decide(blessed=True, reason="no production model yet: only absolute thresholds applied, all passed")
    return decide(
        blessed=True, reason=f"all thresholds passed, including against production version {baseline_version}"
    )
