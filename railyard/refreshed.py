"""A value read again at most every ``ttl_s`` (the canary's share, the served labels), shared by
the ranking service and the streaming scorer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from railyard.errors import RailyardError

T = TypeVar("T")


class Refreshed(Generic[T]):
    """A value read again at most every ``ttl_s``; while a read fails (one of ``errors``), the
    last good value.

    One caller reads while the others go on with the last value, so a slow source (a TF Serving
    that hangs until the client's timeout) holds up one request, not all; only the very first read
    is waited for.
    """

    def __init__(
        self,
        read: Callable[[], T],
        ttl_s: float,
        initial: T,
        on_error: Callable[[Exception], None],
        errors: tuple[type[Exception], ...] = (RailyardError, ValueError),
    ):
        self._read, self._ttl_s, self._value, self._on_error = read, ttl_s, initial, on_error
        self._errors = errors
        self._read_at: float | None = None
        self._reading = threading.Lock()

    def get(self) -> T:
        if self._fresh() or not self._reading.acquire(blocking=self._read_at is None):
            return self._value
        try:
            if not self._fresh():
                self._read_at = time.monotonic()
                try:
                    self._value = self._read()
                except self._errors as error:
                    self._on_error(error)
        finally:
            self._reading.release()
        return self._value

    def _fresh(self) -> bool:
        return self._read_at is not None and time.monotonic() - self._read_at < self._ttl_s
