"""The streaming scorer's Prometheus metrics, in a registry of its own (as the ranking
service's): what ``/metrics`` shows, docs/operations.md says what each means.

Consumer lag, pending entries and dead letters are read from Valkey when ``/metrics`` is
scraped, so they are current even while the scorer waits for a dependency."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("railyard.streaming")

NAMESPACE = "railyard_scorer"
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class StreamCollector:
    """Lag, pending and dead letters of the requests stream, read at scrape time by ``read``
    (a dict as ``streaming.scorer.stream_state`` returns; an error leaves them out)."""

    def __init__(self, read: Callable[[], dict]):
        self._read = read

    def collect(self):
        try:
            state = self._read()
        except Exception as error:  # noqa: BLE001 - a scrape must answer while the store is down
            log.warning("the requests stream's state could not be read: %s", error)
            return
        lag = GaugeMetricFamily(
            f"{NAMESPACE}_consumer_lag", "Requests not yet delivered to the group.", labels=["group"]
        )
        pending = GaugeMetricFamily(
            f"{NAMESPACE}_pending", "Requests delivered and not yet acknowledged, per group.", labels=["group"]
        )
        for group, figures in state["groups"].items():
            lag.add_metric([group], figures["lag"] if figures["lag"] is not None else float("nan"))
            pending.add_metric([group], figures["pending"])
        yield lag
        yield pending
        yield GaugeMetricFamily(
            f"{NAMESPACE}_requests_stream_length", "Entries in the requests stream.", state["length"]
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_dead_letters_stream_length",
            "Entries in the requests' dead-letter stream.",
            state["dead_letters"],
        )


class ScorerMetrics:
    def __init__(self, stream_state: Callable[[], dict] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        common = {"namespace": NAMESPACE, "registry": self.registry}
        self.batch_size = Histogram("batch_size", "Requests per micro-batch scored.", buckets=BATCH_BUCKETS, **common)
        self.predict_seconds = Histogram(
            "predict_seconds",
            "gRPC Predict calls, by label, signature and outcome.",
            ["label", "signature", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            **common,
        )
        self.online_store_seconds = Histogram(
            "online_store_seconds",
            "Online store calls per micro-batch: read_pairs (fresh features), write_results.",
            ["operation"],
            buckets=LATENCY_BUCKETS_S,
            **common,
        )
        self.results = Counter("results", "Results written, by status (ok, deadline_exceeded).", ["status"], **common)
        self.degraded = Counter(
            "degraded_results", "Results scored ids-only: the online store did not answer.", **common
        )
        self.duplicates = Counter(
            "duplicate_results_skipped", "Results not written again: the request id had one already.", **common
        )
        self.latency_seconds = Histogram(
            "end_to_end_seconds", "A request's publish to its result written.", buckets=LATENCY_BUCKETS_S, **common
        )
        self.dead_letters = Counter("dead_letters", "Requests dead-lettered, by reason.", ["reason"], **common)
        self.retries = Counter(
            "dependency_retries", "Waits for a dependency that did not answer.", ["dependency"], **common
        )
        if stream_state is not None:
            self.registry.register(StreamCollector(stream_state))

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
