"""What a reviewer decides from: the review request of a version serving as `canary`, as markdown
(the Prefect artifact and the Resume form's description show the same text), and the lines the
run logs around its review. Pure: the flow gathers the figures, these functions only word them.

Markdown tables and short lines only: the Prefect UI wraps them, where it cuts a fixed-width
block off on the right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from railyard.drift import Verdict, table_markdown
from railyard.evaluation import SYMBOLS, GateDecision, side_by_side, side_by_side_markdown
from railyard.features import FeatureSet
from railyard.gray_rules import LiveFigures
from railyard.moments import when


@dataclass(frozen=True)
class DataWindow:
    source: str
    cutoff_ts: int  # training: ratings before it; holdout: from it on
    last_ts: int | None  # the newest holdout rating
    holdout_rows: int
    fingerprint: str

    @classmethod
    def of(cls, source: str | Path, feature_set: FeatureSet, holdout_rows: int) -> DataWindow:
        """The window a feature set was built from: its source, cutoff and newest holdout rating."""
        holdout = feature_set.holdout
        last = int(holdout["timestamp"].max()) if "timestamp" in holdout.columns and holdout.height else None
        return cls(str(source), feature_set.cutoff_ts, last, holdout_rows, feature_set.fingerprint)

    def markdown(self) -> str:
        newest = "" if self.last_ts is None else f" to {when(self.last_ts)}"
        return (
            f"Data `{self.source}` (fingerprint `{self.fingerprint[:12]}`): trained on the ratings before "
            f"{when(self.cutoff_ts)}; evaluated on the {self.holdout_rows:,} ratings from {when(self.cutoff_ts)}{newest}."
        )


@dataclass(frozen=True)
class ReviewRequest:
    """Everything the review request shows; ``smoke`` is the smoke report (checks with name,
    passed, detail; latency_ms; requests), ``skew`` the online/offline skew share per entity."""

    model: str
    version: int
    flow_run: str | None
    model_kind: str
    kind_spec: str  # where the kind is defined (railyard.kinds.registry)
    code_version: str
    training: str  # how it was trained: from scratch or warm-started, and why (``warm_start.describe``)
    window: DataWindow
    metrics: Mapping[str, float]
    decision: GateDecision
    smoke: object
    skew: Mapping[str, float]
    max_skew_share: float
    deadline: float
    live: Sequence[LiveFigures] = field(default_factory=tuple)
    drift: Verdict | None = None  # the drift check before training (None: nothing to compare with)


def gate_table(decision: GateDecision) -> str:
    """Every check of the gate: the value, its threshold, what it was measured against, the verdict."""
    lines = ["| check | value | threshold | measured against | passed |", "|---|---|---|---|---|"]
    for check in decision.checks:
        lines.append(
            f"| {check.name} | {check.value:+.4f} | {SYMBOLS[check.direction]} {check.threshold:g} | "
            f"{check.compared_with} | {'yes' if check.passed else '**NO**'} |"
        )
    return "\n".join(lines)


def smoke_table(report) -> str:
    head = "passed" if report.passed else f"{len(report.failures())} of {len(report.checks)} checks FAILED"
    latency = ", ".join(f"{name} {value:.1f} ms" for name, value in report.latency_ms.items())
    lines = [
        f"Smoke tests on the canary: {head}; {report.requests:,} requests"
        + (f", latency {latency}" if latency else ""),
        "",
        "| check | passed | detail |",
        "|---|---|---|",
    ]
    lines += [f"| {c.name} | {'yes' if c.passed else '**NO**'} | {c.detail} |" for c in report.checks]
    return "\n".join(lines)


def skew_line(skew: Mapping[str, float], max_share: float) -> str:
    if not skew:
        return "Online store skew: not measured in this run."
    shares = ", ".join(f"{entity} {share:.2%}" for entity, share in skew.items())
    return f"Online store vs. offline features, share of sampled entities that differ: {shares} (allowed: {max_share:.2%})."


def drift_section(verdict: Verdict | None) -> str:
    """The drift check's verdict, and its table when a feature crossed a threshold."""
    if verdict is None:
        return "### Data drift\n\nNot checked: no earlier version keeps statistics of its data."
    if verdict.level == "pass":
        return f"### Data drift\n\nNone: every feature within its thresholds against {verdict.reference}."
    head = f"### Data drift: {verdict.level.upper()}"
    override = (
        f"\n\nThe block was **overridden** for this run (RAILYARD_DRIFT_OVERRIDE): {verdict.override}"
        if verdict.override
        else ""
    )
    return f"{head}\n\nThis window's data against {verdict.reference}'s.{override}\n\n{table_markdown(verdict)}"


def live_lines(live: Sequence[LiveFigures]) -> str:
    if not live:
        return "Live traffic: none through the ranking service yet."
    return "Live traffic through the ranking service:\n\n" + "\n".join(f"- {figures.summary()}" for figures in live)


def commands(version: int) -> str:
    return (
        f"`railyard approve {version} --comment WHY`\n\n"
        f"`railyard reject {version} --comment WHY` (a rejection needs a comment)"
    )


def review_markdown(request: ReviewRequest) -> str:
    """The review request: what is up for review, the evidence, the deadline, how to answer."""
    figures = side_by_side(request.metrics, request.decision.baseline_metrics, request.decision.baseline_version)
    return "\n\n".join(
        [
            f"## {request.model} version {request.version} awaits your review",
            f"Serving as `canary`; decide by **{when(request.deadline)}**: without an answer by then the canary "
            "is unloaded and the version rejected (timed out).",
            f"Model kind `{request.model_kind}` (`{request.kind_spec}`), code `{request.code_version}`"
            + (f"; {request.training}." if request.training else "."),
            request.window.markdown(),
            drift_section(request.drift),
            f"### Evaluation gate: {'passed' if request.decision.blessed else 'FAILED'}",
            request.decision.reason + ".",
            gate_table(request.decision),
            "### The model beside the baselines and production, on the same holdout rows",
            side_by_side_markdown(figures),
            "### Serving",
            smoke_table(request.smoke),
            skew_line(request.skew, request.max_skew_share),
            live_lines(request.live),
            "### Your answer",
            "Choose **approve** or **reject** in this run's **Resume** form (a rejection needs a comment "
            "saying why), or from a shell:",
            commands(request.version),
        ]
    )


def waiting_line(model: str, version: int, flow_run: str | None, deadline: float) -> str:
    """What the run logs before it waits: which version, for whom, until when."""
    return (
        f"{model} version {version} waits for a reviewer's approve or reject until {when(deadline)}: "
        f"the Resume form of flow run {flow_run}, or `railyard approve|reject {version} --comment WHY`"
    )


def decision_line(model: str, version: int, decision, actor: str | None = None) -> str:
    """What the run logs once its review is answered (``decision``: an ApprovalDecision, or None
    when nobody answered in time; ``actor``: who a signed record proves sent it)."""
    if decision is None:
        return f"{model} version {version}: no decision before the deadline"
    comment = f": {decision.comment}" if decision.comment else ""
    named = f" [named: {decision.reviewer}]" if actor and decision.reviewer != actor else ""
    return f"{model} version {version}: {actor or decision.reviewer} answered {decision.decision}{comment}{named}"
