"""Holdout evaluation of an exported model and the evaluation gate's threshold checks.

The holdout rows carry their point-in-time aggregates (all events strictly before each row): the
model is judged on what the online store serves. ``auc_frozen`` (features frozen at the cut-off,
the ids-only signature) and two non-learned baselines are measured on the same rows in the same
call; the gate's thresholds apply to the fresh metrics, and its lift check asks whether the
model earns its keep: its AUC over the fresh baseline's on the same rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from railyard import features as F
from railyard.configs import GateThresholds

if TYPE_CHECKING:
    from railyard.drift import Verdict

FRESH_BASELINE = "user + movie baseline"
LIFT = "auc_lift_vs_fresh_baseline"
# How a check's direction is shown: in a markdown table cell a leading ">" starts a quote.
SYMBOLS = {">=": "≥", "<=": "≤"}

# Clipping keeps log loss finite for a score of exactly 0 or 1.
_EPS = 1e-7
_PLOTTED_POINTS = 2_000  # of a ROC curve's (millions of) points


@dataclass(frozen=True)
class Evaluation:
    # auc, pr_auc, logloss, accuracy (fresh features: the served path), auc_frozen,
    # baseline_auc (popularity), fresh_baseline_auc, rows, positive_rate
    metrics: dict[str, float]
    labels: np.ndarray
    curves: dict[str, np.ndarray]  # name -> scores on the holdout rows: the model's and the baselines'
    rocs: dict[str, Roc]  # name -> the ROC of those scores


@dataclass(frozen=True)
class Roc:
    """A score's ROC curve (a point per distinct score), its area and its average precision."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    average_precision: float


def roc(labels: np.ndarray, scores: np.ndarray) -> Roc:
    """The ROC curve, its area and the average precision from one sort of the scores, equal to
    sklearn's ``roc_curve``, ``roc_auc_score`` and ``average_precision_score``, which sort again
    each (13 sorts of the holdout per evaluation: most of its time at 25M ratings). Rows with
    equal scores count together, as there."""
    positive = np.asarray(labels).reshape(-1) == 1
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(scores)[::-1]
    ranked, positive = scores[order], positive[order]
    ranks = np.append(np.flatnonzero(np.diff(ranked)), len(ranked) - 1)  # the last row of each score
    true_positives = np.cumsum(positive)[ranks]
    false_positives = ranks + 1 - true_positives
    if true_positives[-1] == 0 or false_positives[-1] == 0:
        raise ValueError("the holdout has a single class: AUC is undefined; widen the holdout window")
    tpr = np.append(0.0, true_positives / true_positives[-1])
    fpr = np.append(0.0, false_positives / false_positives[-1])
    precision = true_positives / (ranks + 1)
    return Roc(fpr, tpr, float(np.trapezoid(tpr, fpr)), float(np.sum(np.diff(tpr) * precision)))


def classification_metrics(labels: np.ndarray, scores: np.ndarray, curve: Roc | None = None) -> dict[str, float]:
    """AUC, average precision, log loss and accuracy of ``scores`` (``curve``: their ``roc``, if
    already computed from the scores ``_clipped``)."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = _clipped(scores)
    curve = curve or roc(labels, scores)
    logloss = -np.mean(labels * np.log(scores) + (1 - labels) * np.log(1 - scores))
    return {
        "auc": curve.auc,
        "pr_auc": curve.average_precision,
        "logloss": float(logloss),
        "accuracy": float(np.mean((scores >= 0.5) == (labels == 1))),
    }


def _clipped(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), _EPS, 1 - _EPS)


def baseline_scores(holdout: pl.DataFrame, priors: dict[str, float]) -> dict[str, np.ndarray]:
    """Non-learned baselines from each row's fresh aggregates (what the store holds at the request):
    popularity (the movie's smoothed positive rate) and user + movie (both smoothed positive rates,
    summed as logits)."""

    def rate(prefix: str) -> np.ndarray:
        positives, count = (holdout.get_column(f"{prefix}_{name}").to_numpy() for name in ("positives", "n"))
        return F.smoothed(positives.astype(np.float64), count.astype(np.float64), priors["pos"])

    user, movie = rate("user"), rate("movie")
    return {"popularity baseline": movie, FRESH_BASELINE: _logit(user) + _logit(movie)}


def _logit(p: np.ndarray) -> np.ndarray:
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True, eq=False)
class Holdout:
    """The holdout rows as every model is scored on them, prepared once for the candidate and
    production alike: the labels, the baselines' scores and ROCs, and (when first read) the
    ``features`` signature's inputs (25M ratings: a 5M-row holdout, 4 s each)."""

    frame: pl.DataFrame
    labels: np.ndarray
    baselines: dict[str, np.ndarray]
    baseline_rocs: dict[str, Roc]

    @classmethod
    def of(cls, frame: pl.DataFrame, priors: dict[str, float]) -> Holdout:
        labels = frame.get_column("label").to_numpy()
        baselines = baseline_scores(frame, priors)
        return cls(frame, labels, baselines, {name: roc(labels, scores) for name, scores in baselines.items()})

    @cached_property
    def inputs(self) -> dict[str, np.ndarray]:
        from railyard.model_input import feature_inputs

        return feature_inputs(self.frame)


def evaluate_scores(holdout: Holdout, fresh: np.ndarray, frozen: np.ndarray) -> Evaluation:
    """Metrics of the model's scores with fresh features (what is served, the gate's metrics) and
    with features frozen at the cut-off, beside the baselines, all on the same holdout rows."""
    labels = holdout.labels
    curves = {"model": _clipped(fresh), "model, features frozen": np.asarray(frozen).reshape(-1)}
    rocs = {name: roc(labels, scores) for name, scores in curves.items()} | holdout.baseline_rocs
    curves |= holdout.baselines
    metrics = classification_metrics(labels, curves["model"], rocs["model"])
    metrics["auc_frozen"] = rocs["model, features frozen"].auc
    metrics["baseline_auc"] = rocs["popularity baseline"].auc
    metrics["fresh_baseline_auc"] = rocs[FRESH_BASELINE].auc
    metrics[LIFT] = metrics["auc"] - metrics["fresh_baseline_auc"]
    metrics["rows"] = float(len(labels))
    metrics["positive_rate"] = float(np.mean(labels))
    return Evaluation(metrics=metrics, labels=labels, curves=curves, rocs=rocs)


def evaluate_saved_model(saved_model_dir: Path, holdout: Holdout) -> Evaluation:
    """Score the exported SavedModel itself on the holdout, through both its signatures: what is
    measured is what ships. A version exported before the ``features`` signature serves ids only:
    that is its fresh path too."""
    from railyard import export

    ids = holdout.frame.get_column("userId"), holdout.frame.get_column("movieId")
    frozen = export.predict_saved_model(saved_model_dir, *ids)
    try:
        fresh = export.predict_with_features(saved_model_dir, holdout.inputs)
    except export.MissingSignature:
        fresh = frozen
    return evaluate_scores(holdout, fresh, frozen)


def plot_roc(evaluation: Evaluation, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers and CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5, 5))
    for name, curve in evaluation.rocs.items():
        shown = np.unique(np.linspace(0, len(curve.fpr) - 1, _PLOTTED_POINTS).astype(int))  # a figure's worth
        axes.plot(curve.fpr[shown], curve.tpr[shown], label=f"{name} (AUC {curve.auc:.3f})")
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
    versus: int | None = None  # the production version a change check compares with
    compared_with: str = "threshold"  # what the value is measured against, for the gate's table


@dataclass(frozen=True)
class GateDecision:
    blessed: bool
    checks: tuple[ThresholdCheck, ...]
    reason: str
    baseline_version: int | None = None  # the production version scored beside the challenger
    baseline_metrics: dict[str, float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _check(
    name: str,
    value: float,
    threshold: float | None,
    direction: str,
    versus: int | None = None,
    compared_with: str = "threshold",
) -> ThresholdCheck | None:
    if threshold is None:
        return None
    passed = value >= threshold if direction == ">=" else value <= threshold
    return ThresholdCheck(
        name=name,
        value=float(value),
        threshold=threshold,
        direction=direction,
        passed=passed,
        versus=versus,
        compared_with=compared_with,
    )


def _rows(metrics: dict[str, float]) -> str:
    return f"{int(metrics['rows'])} holdout rows" if "rows" in metrics else "holdout rows"


def gate(
    metrics: dict[str, float],
    thresholds: GateThresholds,
    *,
    baseline_metrics: dict[str, float] | None = None,
    baseline_version: int | None = None,
) -> GateDecision:
    """TFX-style blessing: absolute thresholds; the lift over the fresh baseline (user + movie
    rates, no learning) on the same holdout rows, with or without a production model; change
    thresholds when a production model was scored on the same holdout. Without any threshold,
    refuse (never bless by accident)."""
    rows = _rows(metrics)
    candidates = [
        _check("auc", metrics["auc"], thresholds.min_auc, ">="),
        _check("logloss", metrics["logloss"], thresholds.max_logloss, "<="),
        _check(
            LIFT,
            metrics["auc"] - metrics["fresh_baseline_auc"],
            thresholds.min_auc_lift,
            ">=",
            compared_with=f"fresh baseline (user + movie rates) AUC {metrics['fresh_baseline_auc']:.4f} on the same {rows}",
        ),
    ]
    if baseline_metrics is not None:
        versus = partial(
            _check, versus=baseline_version, compared_with=f"production version {baseline_version} on the same {rows}"
        )
        candidates += [
            versus(
                "auc_change_vs_production", metrics["auc"] - baseline_metrics["auc"], thresholds.min_auc_change, ">="
            ),
            versus(
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
        return decide(blessed=False, reason="; ".join(map(_failure, failed)))
    if baseline_metrics is None:
        return decide(
            blessed=True, reason="no production model yet: thresholds and the lift over the fresh baseline passed"
        )
    return decide(
        blessed=True, reason=f"all thresholds passed, including against production version {baseline_version}"
    )


def _failure(check: ThresholdCheck) -> str:
    said = f"{check.name}={check.value:.4f} fails {check.direction} {check.threshold}"
    return said if check.compared_with == "threshold" else f"{said} ({check.compared_with})"


def gate_table(decision: GateDecision, drift_verdict: Verdict | None = None) -> list[dict]:
    """The gate's checks, one row each saying what it compares with; below them, the drift
    check's crossed thresholds, which the gate does not decide on (the Prefect UI's table)."""
    return [
        {
            "check": c.name,
            "value": round(c.value, 5),
            "threshold": f"{SYMBOLS[c.direction]} {c.threshold}",
            "passed": c.passed,
            "compared with": c.compared_with,
        }
        for c in decision.checks
    ] + [
        {
            "check": f"data drift: {m.feature} ({m.kind})",
            "value": round(m.distance, 5),
            "threshold": f"warn {m.warn}, block {m.block}",
            "passed": f"{m.level} (not gated)"
            + (f", overridden: {drift_verdict.override}" if m.level == "block" else ""),
            "compared with": drift_verdict.reference,
        }
        for m in (drift_verdict.crossed() if drift_verdict is not None else [])
    ]


def side_by_side(
    metrics: dict[str, float], production_metrics: dict[str, float] | None = None, production_version: int | None = None
) -> list[dict]:
    """The model, both baselines and production on the same holdout rows, one row each: AUC, log
    loss (of scores that are probabilities) and the AUC's lift over the fresh baseline."""
    fresh = metrics["fresh_baseline_auc"]

    def row(scored: str, auc: float, logloss: float | None = None) -> dict:
        return {
            "scored": scored,
            "auc": round(auc, 4),
            "logloss": None if logloss is None else round(logloss, 4),
            "lift": round(auc - fresh, 4),
        }

    rows = [
        row("model (fresh features: served)", metrics["auc"], metrics["logloss"]),
        row("model (features frozen at the cut-off)", metrics["auc_frozen"]),
        row("popularity baseline (movie rate)", metrics["baseline_auc"]),
        row("fresh baseline (user + movie rates)", fresh),
    ]
    if production_metrics is not None:
        production = row(
            f"production version {production_version}", production_metrics["auc"], production_metrics["logloss"]
        )
        rows.append(production)
    return rows


def side_by_side_markdown(rows: list[dict]) -> str:
    """``side_by_side`` as a Markdown table (the review request, the Prefect UI)."""
    lines = [
        "| scored on the same holdout rows | AUC | log loss | AUC lift over the fresh baseline |",
        "|---|---|---|---|",
    ]
    for row in rows:
        logloss = "" if row["logloss"] is None else f"{row['logloss']:.4f}"
        lines.append(f"| {row['scored']} | {row['auc']:.4f} | {logloss} | {row['lift']:+.4f} |")
    return "\n".join(lines)
