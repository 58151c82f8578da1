"""Holdout evaluation of an exported model and the evaluation gate's threshold checks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

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

    def as_dict(self) -> dict:
        return {"blessed": self.blessed, "reason": self.reason, "checks": [asdict(c) for c in self.checks]}


def absolute_gate(metrics: dict[str, float], *, min_auc: float | None, max_logloss: float | None) -> GateDecision:
    """Bless only when thresholds exist and all pass (never bless by accident)."""
    wanted = [("auc", min_auc, ">="), ("logloss", max_logloss, "<=")]
    checks = tuple(
        ThresholdCheck(
            name=name,
            value=metrics[name],
            threshold=threshold,
            direction=direction,
            passed=metrics[name] >= threshold if direction == ">=" else metrics[name] <= threshold,
        )
        for name, threshold, direction in wanted
        if threshold is not None
    )
    if not checks:
        return GateDecision(False, (), "no thresholds configured: refusing to bless")
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(f"{c.name}={c.value:.4f} fails {c.direction} {c.threshold}" for c in failed)
        return GateDecision(False, checks, reason)
    return GateDecision(True, checks, "all absolute thresholds passed (no production model compared yet)")
