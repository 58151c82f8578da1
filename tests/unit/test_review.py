"""The review request a reviewer decides from, and the lines the run logs around the review."""

from infra.rollout.smoke import SmokeCheck, SmokeReport
from railyard.configs import GateThresholds
from railyard.drift import Measure, Verdict
from railyard.evaluation import gate
from railyard.gray_rules import LiveFigures
from railyard.moments import when
from railyard.review import DataWindow, ReviewRequest, decision_line, review_markdown, waiting_line
from release.review_runs import ApprovalDecision

METRICS = {
    "auc": 0.8312,
    "logloss": 0.5123,
    "auc_frozen": 0.79,
    "baseline_auc": 0.71,
    "fresh_baseline_auc": 0.809,
    "rows": 18000,
}
THRESHOLDS = GateThresholds(
    min_auc=0.7, max_logloss=0.65, min_auc_change=-0.01, max_logloss_change_relative=0.05, min_auc_lift=0.005
)
DEADLINE = 1796637600.0  # 2026-12-07 10:00:00 UTC


def _request(live=(), drift=None) -> ReviewRequest:
    decision = gate(METRICS, THRESHOLDS, baseline_metrics={"auc": 0.8201, "logloss": 0.52}, baseline_version=4)
    smoke = SmokeReport("recmodel", 5, "canary", requests=40, latency_ms={"p50": 3.2, "p95": 7.9})
    smoke.checks += [SmokeCheck("status", True, "AVAILABLE"), SmokeCheck("latency_burst", True, "p95 7.9 ms ≤ 2000 ms")]
    return ReviewRequest(
        model="recmodel",
        version=5,
        flow_run="run-1",
        model_kind="fresh_wd",
        kind_spec="railyard.kinds.fresh_wd:KIND",
        code_version="abc123",
        training="warm-started from version 4 (RAILYARD_TRAINING_START=auto: the ratings since 1796200000 and a replay "
        "sample of the older ones)",
        window=DataWindow("/data/ratings", 1796300000, 1796600000, 18000, "f" * 64),
        metrics=METRICS,
        decision=decision,
        smoke=smoke,
        skew={"users": 0.0, "movies": 0.02},
        max_skew_share=0.05,
        deadline=DEADLINE,
        live=live,
        drift=drift,
    )


def test_the_request_shows_every_figure_a_reviewer_decides_from():
    markdown = review_markdown(_request())
    for shown in (
        "## recmodel version 5 awaits your review",
        "Model kind `fresh_wd` (`railyard.kinds.fresh_wd:KIND`), code `abc123`; warm-started from version 4 "
        "(RAILYARD_TRAINING_START=auto: the ratings since 1796200000 and a replay sample of the older ones).",
        "decide by **2026-12-07 10:00:00 UTC**",
        "| auc | +0.8312 | ≥ 0.7 | threshold | yes |",
        "| logloss | +0.5123 | ≤ 0.65 | threshold | yes |",
        "| auc_lift_vs_fresh_baseline | +0.0222 | ≥ 0.005 | fresh baseline (user + movie rates) AUC 0.8090",
        "| auc_change_vs_production | +0.0111 | ≥ -0.01 | production version 4 on the same 18000 holdout rows | yes |",
        "| model (fresh features: served) | 0.8312 | 0.5123 | +0.0222 |",
        "| popularity baseline (movie rate) | 0.7100 |  | -0.0990 |",
        "| production version 4 | 0.8201 | 0.5200 | +0.0111 |",
        "Smoke tests on the canary: passed; 40 requests, latency p50 3.2 ms, p95 7.9 ms",
        "| latency_burst | yes | p95 7.9 ms ≤ 2000 ms |",
        "users 0.00%, movies 2.00% (allowed: 5.00%)",
        "trained on the ratings before 2026-12-03 12:13:20 UTC",
        "evaluated on the 18,000 ratings from",
        "Live traffic: none through the ranking service yet.",
        "`railyard approve 5 --comment WHY`",
        "`railyard reject 5 --comment WHY` (a rejection needs a comment)",
    ):
        assert shown in markdown, shown
    # Nothing the Prefect UI would show in a fixed-width box cut off on the right.
    assert "```" not in markdown and " s the canary" not in markdown


def test_live_figures_appear_when_there_are_some():
    live = [LiveFigures("stable", 4, 500, 0, 20.0, 0.5, 5.0), LiveFigures("canary", 5, 50, 1, 50.0, 0.52, 5.0)]
    markdown = review_markdown(_request(live))
    assert "- stable v4: 500 requests" in markdown and "- canary v5: 50 requests, 2.00% errors" in markdown


def test_drift_warnings_and_an_overridden_block_are_shown_with_their_thresholds():
    userid = Measure("userId", 0.42, "linf", 0.2, 0.3, "1001")
    label = Measure("label_rate", 0.17, "difference", 0.15, 0.25, "0.560 -> 0.730")
    calm = Measure("rating", 0.05, "js", 0.2, 0.3, "bin 4")
    warned = review_markdown(_request(drift=Verdict((label, calm), "production version 4")))
    assert "### Data drift: WARN" in warned and "against production version 4's" in warned
    assert "| label_rate | 0.170 | difference | 0.15 | 0.25 | **warn** | 0.560 -> 0.730 |" in warned
    overridden = review_markdown(_request(drift=Verdict((userid, label), "production version 4", "a new partner")))
    assert "### Data drift: BLOCK" in overridden and "**overridden** for this run" in overridden
    assert "a new partner" in overridden and "| userId | 0.420 | linf | 0.2 | 0.3 | **block** | 1001 |" in overridden
    assert "### Data drift\n\nNone" in review_markdown(_request(drift=Verdict((calm,), "production version 4")))
    assert "Not checked" in review_markdown(_request())


def test_the_log_says_who_waits_until_when_and_then_the_decision():
    assert waiting_line("recmodel", 5, "run-1", DEADLINE) == (
        "recmodel version 5 waits for a reviewer's approve or reject until 2026-12-07 10:00:00 UTC: the Resume "
        "form of flow run run-1, or `railyard approve|reject 5 --comment WHY`"
    )
    answer = ApprovalDecision(decision="reject", reviewer="bob", comment="odd scores")
    assert decision_line("recmodel", 5, answer) == "recmodel version 5: bob answered reject: odd scores"
    # The signed record's user decides; the name typed in the form stays beside the comment.
    assert decision_line("recmodel", 5, answer, "alice") == (
        "recmodel version 5: alice answered reject: odd scores [named: bob]"
    )
    assert decision_line("recmodel", 5, answer, "bob") == "recmodel version 5: bob answered reject: odd scores"
    assert decision_line("recmodel", 5, None) == "recmodel version 5: no decision before the deadline"
    assert when(DEADLINE) == "2026-12-07 10:00:00 UTC"
