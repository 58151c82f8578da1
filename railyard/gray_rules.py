"""Gray release by user: which label a user's requests go to, and what each label's live traffic
says about it.

A user's bucket is a hash of the userId, so one user always sees one version and the canary's
share of users is the share of buckets below it, whatever process answers. Live figures come
from counters every ranking-service replica adds to (requests, errors, scores, a latency
histogram); the bake verdict compares the canary's with its budget.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from railyard.configs import BakeBudget
from railyard.contract import CANARY, STABLE

# Upper bounds (ms) of the latency histogram's buckets; a last bucket holds everything slower.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000)


def user_bucket(user_id: int) -> float:
    """A stable point in [0, 1) for the user: the same in every process and on every machine."""
    digest = hashlib.blake2b(str(int(user_id)).encode(), digest_size=8, person=b"railyard-gray").digest()
    return int.from_bytes(digest, "big") / 2**64


def label_for(user_id: int, canary_share: float) -> str:
    return CANARY if user_bucket(user_id) < canary_share else STABLE


def canary_serves(labels: dict[str, int]) -> bool:
    """Whether a canary other than stable's version is served (label -> version): after a
    promotion both labels name one version, and every user goes to stable."""
    return labels.get(CANARY, labels.get(STABLE)) != labels.get(STABLE)


def routes(user_ids, canary_share: float) -> list[str]:
    """Each user's label (the ranking service and the streaming scorer route alike); give a
    share of 0 while ``canary_serves`` says no."""
    return [label_for(user, canary_share) for user in user_ids]


def latency_bucket(latency_ms: float) -> int:
    """The index of the histogram bucket a latency falls in."""
    for index, bound in enumerate(LATENCY_BUCKETS_MS):
        if latency_ms <= bound:
            return index
    return len(LATENCY_BUCKETS_MS)


def request_counters(latency_ms: float, error: bool, score: float | None) -> dict[str, float]:
    """What one answered request adds to its label's live counters (see ``live_figures``)."""
    counters = {"requests": 1.0, f"latency_{latency_bucket(latency_ms)}": 1.0}
    if error:
        counters["errors"] = 1.0
    if score is not None:
        counters |= {"scores": 1.0, "score_sum": score}
    return counters


# Below this many requests the p99 is the slowest request (a cold first one included): say so.
FEW_REQUESTS = 100


@dataclass(frozen=True)
class LiveFigures:
    label: str
    version: int | None
    requests: int
    errors: int
    p99_ms: float | None  # the upper bound of the bucket holding the 99th percentile
    mean_score: float | None
    p50_ms: float | None = None  # the same for the median

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def summary(self) -> str:
        if not self.requests:
            return f"{self.label} v{self.version}: no requests yet"
        p50, p99 = (_bound(value) for value in (self.p50_ms, self.p99_ms))
        slowest = f" (of {self.requests:,} requests: the slowest one)" if self.requests < FEW_REQUESTS else ""
        score = "-" if self.mean_score is None else f"{self.mean_score:.4f}"
        return (
            f"{self.label} v{self.version}: {self.requests:,} requests, {self.error_rate:.2%} errors, "
            f"latency p50 {p50}, p99 {p99}{slowest}, mean score {score}"
        )


def _bound(upper_ms: float | None) -> str:
    return "-" if upper_ms is None else f"≤ {upper_ms:g} ms"


def live_figures(label: str, version: int | None, counters: dict[str, float]) -> LiveFigures:
    """Figures from the counters the ranking service keeps: ``requests``, ``errors``, ``scores``
    (scored answers) and ``score_sum``, and ``latency_<i>`` per bucket (not cumulative)."""
    requests, errors = int(counters.get("requests", 0)), int(counters.get("errors", 0))
    counts = [int(counters.get(f"latency_{i}", 0)) for i in range(len(LATENCY_BUCKETS_MS) + 1)]
    scored = int(counters.get("scores", 0))
    mean = counters.get("score_sum", 0.0) / scored if scored else None
    return LiveFigures(label, version, requests, errors, _quantile(counts, 0.99), mean, _quantile(counts, 0.5))


def _quantile(counts: list[int], share: float) -> float | None:
    """The upper bound of the latency bucket that holds the ``share`` quantile (None: no request)."""
    if not sum(counts):
        return None
    wanted, seen = share * sum(counts), 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= wanted:
            break
    return float(LATENCY_BUCKETS_MS[index]) if index < len(LATENCY_BUCKETS_MS) else float("inf")


def bake_verdict(canary: LiveFigures, budget: BakeBudget) -> str | None:
    """Why the canary must be rolled back, or None while it stays within its budget (or has not
    served enough requests to say)."""
    if canary.requests < budget.min_requests:
        return None
    problems = []
    if canary.error_rate > budget.max_error_rate:
        problems.append(f"error rate {canary.error_rate:.2%} over the {budget.max_error_rate:.2%} budget")
    if canary.p99_ms is not None and canary.p99_ms > budget.max_p99_ms:
        problems.append(f"p99 {canary.p99_ms:g} ms over the {budget.max_p99_ms:g} ms budget")
    return "; ".join(problems) or None
