"""The ranking service's live figures, batched: summed per label and version, written together,
kept whole when a write fails."""

import threading

from infra.ranking.live import LiveBuffer


class Store:
    def __init__(self):
        self.writes, self.down = [], False

    def write(self, counts):
        if self.down:
            raise ConnectionError("the online store does not answer")
        self.writes.append({key: dict(counters) for key, counters in counts.items()})


def test_requests_are_summed_per_label_and_version_and_written_together():
    store = Store()
    live = LiveBuffer(store.write, flush_s=60)  # not started: flush() and close() write
    live.add("canary", 2, 3.0, False, 0.5)
    live.add("canary", 2, 30.0, True, None)
    live.add("stable", 1, 3.0, False, 0.25)
    assert live.flush() and live.flush()  # the second has nothing to write
    assert store.writes == [
        {
            ("canary", 2): {"requests": 2, "latency_2": 1, "latency_5": 1, "errors": 1, "scores": 1, "score_sum": 0.5},
            ("stable", 1): {"requests": 1, "latency_2": 1, "scores": 1, "score_sum": 0.25},
        }
    ]


def test_a_failed_write_keeps_its_counts_for_the_next_and_close_writes_the_rest():
    store, errors = Store(), []
    live = LiveBuffer(store.write, flush_s=60, on_error=errors.append)  # not started
    store.down = True
    live.add("canary", 2, 3.0, False, 0.5)
    assert not live.flush() and len(errors) == 1 and store.writes == []
    live.add("canary", 2, 3.0, True, None)
    store.down = False
    live.close()
    assert store.writes == [
        {("canary", 2): {"requests": 2, "latency_2": 2, "errors": 1, "scores": 1, "score_sum": 0.5}}
    ]


def test_the_thread_writes_every_interval_until_closed():
    store = Store()
    written = threading.Event()
    live = LiveBuffer(lambda counts: (store.write(counts), written.set()), flush_s=0.01).start()
    live.add("stable", 1, 1.0, False, 0.5)
    assert written.wait(5)
    live.close()
    assert store.writes == [{("stable", 1): {"requests": 1, "latency_0": 1, "scores": 1, "score_sum": 0.5}}]
