"""bench.bench_streaming's breakdown per batch reads the scorer's own metrics by their real names."""

from bench.bench_streaming import per_batch, sums_of
from infra.streaming.metrics import ScorerMetrics


def test_the_breakdown_per_batch_reads_the_scorers_metrics():
    metrics = ScorerMetrics()
    before = sums_of(metrics.exposition()[0].decode())
    for size, read, predict, write in ((64, 0.006, 0.003, 0.002), (32, 0.004, 0.001, 0.002)):
        metrics.batch_size.observe(size)
        metrics.online_store_seconds.labels("read_pairs").observe(read)
        metrics.predict_seconds.labels("stable", "features", "ok").observe(predict)
        metrics.online_store_seconds.labels("write_results").observe(write)
    metrics.predict_seconds.labels("canary", "features", "ok").observe(1.0)  # not stable's: left out
    after = sums_of(metrics.exposition()[0].decode())
    assert per_batch(before, after) == {
        "mean_batch": 48.0,
        "read_pairs_ms": 5.0,
        "predict_ms": 2.0,
        "write_results_ms": 2.0,
    }
