"""The ranking service's Prometheus metrics, in a registry of its own: two services in one process
(a test's, or an embedding application's) never mix their figures, and prometheus_client's
global registry (process and platform collectors) stays out of ``/metrics``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds; a local Valkey answers in about a millisecond, a small model's predict in a few.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NAMESPACE = "railyard_ranking"


class RankingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        common = {"namespace": NAMESPACE, "registry": self.registry}
        self.requests = Counter(
            "requests",
            "Requests answered, by endpoint, the label that answered and HTTP status.",
            ["endpoint", "label", "status"],
            **common,
        )
        self.request_seconds = Histogram(
            "request_seconds",
            "Time to answer a request, by endpoint and the label that answered.",
            ["endpoint", "label"],
            buckets=LATENCY_BUCKETS_S,
            **common,
        )
        self.online_store_seconds = Histogram(
            "online_store_seconds",
            "Online store calls: candidates, read_pairs, canary_share, record.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            **common,
        )
        self.tfserving_seconds = Histogram(
            "tfserving_seconds",
            "gRPC Predict calls to TF Serving, by label, signature and outcome.",
            ["label", "signature", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            **common,
        )
        self.errors = Counter("errors", "Errors by kind (a canary fallback counts too).", ["kind"], **common)
        self.degraded = Counter(
            "degraded_answers",
            "Answers from the ids-only signature: the online store did not answer.",
            ["endpoint"],
            **common,
        )
        self.replica_up = Gauge(
            "tfserving_replica_up",
            "1 while a TF Serving replica answers, 0 while it is set aside after failing to.",
            ["replica"],
            **common,
        )
        self.canary_share = Gauge("canary_share", "The canary's share of users this service last read.", **common)

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
