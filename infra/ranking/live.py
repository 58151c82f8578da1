"""The live figures of a ranking service, gathered in memory and written to the online store
together every ``flush_s`` by one thread: one store transaction per interval instead of one write
(and one thread hand-off) per request. The bake reads them at most ``flush_s`` late.

A write that fails keeps its counts for the next one (the transaction added nothing), so an
online store that is down for a while loses no request; ``close`` writes what is left.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping

from railyard.gray_rules import request_counters

log = logging.getLogger("railyard.ranking")

Counts = dict[tuple[str, int], Counter]  # (label, version) -> counter name -> sum


class LiveBuffer:
    def __init__(
        self,
        write: Callable[[Mapping[tuple[str, int], Mapping[str, float]]], None],
        *,
        flush_s: float,  # RAILYARD_RANKING_LIVE_FLUSH_S in a ranking service
        on_error: Callable[[Exception], None] = lambda error: None,
    ) -> None:
        """``write(counts)`` adds the counts to the store, all or nothing (``gray_state.add_live``)."""
        self._write, self._flush_s, self._on_error = write, flush_s, on_error
        self._pending: Counts = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one write at a time: the thread's and close()'s
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-figures", daemon=True)

    def start(self) -> LiveBuffer:
        self._thread.start()
        return self

    def add(self, label: str, version: int, latency_ms: float, error: bool, score: float | None) -> None:
        with self._lock:
            self._pending.setdefault((label, version), Counter()).update(request_counters(latency_ms, error, score))

    def flush(self) -> bool:
        """Write what is pending; False if the write failed (the counts wait for the next one)."""
        with self._flushing:
            with self._lock:
                counts, self._pending = self._pending, {}
            if not counts:
                return True
            try:
                self._write(counts)
            except Exception as error:  # noqa: BLE001 - whatever the store raised: keep the counts, say so
                with self._lock:
                    for key, counters in counts.items():
                        self._pending.setdefault(key, Counter()).update(counters)
                self._on_error(error)
                return False
            return True

    def close(self) -> None:
        """Stop the thread, then write what is left (once; a store that is down keeps it)."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self.flush():
            log.warning("live figures of %d label(s) not written: the online store did not answer", len(self._pending))

    def _run(self) -> None:
        while not self._closed.wait(self._flush_s):
            self.flush()
