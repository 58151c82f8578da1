"""Gray release arithmetic: stable routing by user, live figures from counters, the bake verdict."""

import pytest

from railyard import gray_rules
from railyard.configs import BakeBudget


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 1.0])
def test_the_canary_gets_its_share_of_users_and_each_user_one_label(share):
    users = range(1, 10_001)
    labels = [gray_rules.label_for(user, share) for user in users]
    assert abs(labels.count("canary") / len(labels) - share) <= 0.02
    assert labels == [gray_rules.label_for(user, share) for user in users]  # the same answer every time
    # A larger share only adds users: nobody on the canary goes back to stable when it grows.
    assert all(
        gray_rules.label_for(user, min(1.0, share + 0.2)) == "canary"
        for user, label in zip(users, labels)
        if label == "canary"
    )


def test_live_figures_from_counters():
    counters = {"requests": 200, "errors": 4, "scores": 196, "score_sum": 98.0}
    counters |= {"latency_2": 150, "latency_3": 47, "latency_6": 3}  # <=5 ms, <=10 ms, <=100 ms
    figures = gray_rules.live_figures("canary", 7, counters)
    assert (figures.requests, figures.errors, figures.error_rate) == (200, 4, 0.02)
    assert figures.p99_ms == 100.0 and figures.mean_score == 0.5  # the 198th of 200 is in the <=100 ms bucket
    assert figures.p50_ms == 5.0
    assert (
        figures.summary()
        == "canary v7: 200 requests, 2.00% errors, latency p50 ≤ 5 ms, p99 ≤ 100 ms, mean score 0.5000"
    )
    assert gray_rules.live_figures("stable", 1, {}).summary() == "stable v1: no requests yet"
    assert (
        gray_rules.latency_bucket(0.3) == 0
        and gray_rules.latency_bucket(10) == 3
        and gray_rules.latency_bucket(1e6) == 12
    )


def test_the_bake_verdict_waits_for_evidence_then_judges_errors_and_latency():
    budget = BakeBudget(seconds=60, max_error_rate=0.01, max_p99_ms=50, min_requests=100)
    few = gray_rules.LiveFigures("canary", 2, requests=20, errors=20, p99_ms=5000.0, mean_score=None)
    assert gray_rules.bake_verdict(few, budget) is None
    fine = gray_rules.LiveFigures("canary", 2, requests=500, errors=5, p99_ms=20.0, mean_score=0.5)
    assert gray_rules.bake_verdict(fine, budget) is None
    bad = gray_rules.LiveFigures("canary", 2, requests=500, errors=50, p99_ms=200.0, mean_score=0.5)
    assert (
        gray_rules.bake_verdict(bad, budget)
        == "error rate 10.00% over the 1.00% budget; p99 200 ms over the 50 ms budget"
    )


def test_latency_over_few_requests_says_how_many_it_covers():
    """One cold first request among a few makes the p99: the line says so instead of passing it off
    as the 99th percentile of real traffic."""
    figures = gray_rules.live_figures("stable", 1, {"requests": 57, "latency_1": 56, "latency_10": 1})  # one ≤ 2 s
    assert figures.summary() == (
        "stable v1: 57 requests, 0.00% errors, latency p50 ≤ 2 ms, p99 ≤ 2000 ms (of 57 requests: the slowest one), "
        "mean score -"
    )
