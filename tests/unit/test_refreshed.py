"""The ranking service's refreshed values (the canary's share, the served labels): one caller
reads, the others go on with the last value, so a hanging source holds up one request."""

import threading
import time

from railyard.refreshed import Refreshed


def test_while_one_caller_reads_the_others_get_the_last_value_at_once():
    release, reading = threading.Event(), threading.Event()
    values = iter([1, 2])

    def read():
        value = next(values)
        if value == 2:  # the second read hangs until released
            reading.set()
            release.wait(10)
        return value

    refreshed = Refreshed(read, ttl_s=0.01, initial=0, on_error=lambda error: None)
    assert refreshed.get() == 1  # the first read is waited for
    time.sleep(0.02)
    slow = threading.Thread(target=refreshed.get)
    slow.start()
    assert reading.wait(5)
    started = time.monotonic()
    assert refreshed.get() == 1 and time.monotonic() - started < 1  # not held up by the hanging read
    release.set()
    slow.join(5)
    assert refreshed.get() == 2


def test_a_failed_read_keeps_the_last_value_and_is_not_retried_before_the_ttl():
    calls, errors = [], []

    def read():
        calls.append(1)
        if len(calls) > 1:
            raise ValueError("unreadable")
        return 0.25

    refreshed = Refreshed(read, ttl_s=0.05, initial=0.0, on_error=errors.append)
    assert refreshed.get() == 0.25
    time.sleep(0.06)
    assert [refreshed.get() for _ in range(5)] == [0.25] * 5
    assert len(calls) == 2 and len(errors) == 1
