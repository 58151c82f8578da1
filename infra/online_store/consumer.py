"""A stream consumer in consumer groups: the loop every Railyard stream consumer runs (the rating
ingester, ``infra.online_store.stream``; the streaming scorer, ``infra.streaming``).

The transport is a small interface (``Transport``); ``ValkeyStreams`` implements it on Valkey
Streams. What the loop promises, whatever the work:

- **Micro-batches.** With ``flush_ms``, a read of new entries that returned fewer than
  ``batch_size`` reads on until the batch is full or ``flush_ms`` passed since its first entry
  came (flush at N entries or T milliseconds, whichever comes first).
- **Pending first.** On start a consumer takes the entries it left pending (read from id 0 of
  its own pending list), then new ones; before a read of new entries, at most every
  ``claim_idle_s / CLAIM_CHECKS``, it claims entries another consumer of the group left pending
  longer than ``claim_idle_s`` (XAUTOCLAIM: that consumer died).
- **Acknowledged after the effect.** A batch is acknowledged only once its work returned, so a
  crash leaves it pending, and the work must be idempotent (doing a batch twice is harmless).
- **Overlapped batches** (a group's work with ``start``): the work of a batch of new entries is
  started, and completed only after the next batch was read and started, so reading the next
  batch overlaps with this one's work (the scorer's Predict). One batch is in flight at most; it is
  completed before a read that may wait, before the loop returns and before this consumer's own
  pending entries are read; it is acknowledged only after it is completed (a crash leaves it
  pending). When its start or completion fails, the batch is done again with ``do`` (the rules
  below apply).
- **Dead letters.** An entry the work refuses (``Refusal``), or that anything fails on (a bug
  included), is recorded once in the dead-letter stream with a reason and acknowledged.
- **No single entry stops it.** When a whole batch fails for a reason that is not
  ``not_the_entry`` (a dependency down, the disk), its entries are tried one at a time, so only
  the one that fails alone is refused.
- **Backoff while a dependency is down.** ``retrying`` calls again with capped exponential
  backoff while a call raises one of ``unavailable`` (the store, always); entries stay pending.
  When the consumer is stopped meanwhile the error is raised, and the entries stay pending.

Kafka's words, in these terms (docs/architecture.md): a topic is a stream, a consumer group a
group, a committed offset the acknowledgements (what is not acknowledged stays in the group's
pending entries list), partition rebalancing after a consumer died is XAUTOCLAIM of its idle
entries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import redis

from infra.online_store.store import OnlineStoreUnavailable, reachable
from railyard.errors import RailyardError

log = logging.getLogger("railyard.consumer")

# Idle entries are looked for this many times per claim_idle_s (not before every read: a round trip).
CLAIM_CHECKS = 10
POLL_S = 0.2  # how long an idle consumer blocks on the stream before checking its stop flag
FIRST_RETRY_S, MAX_RETRY_S = 0.2, 5.0  # backoff while a dependency does not answer
# A dead letter records at most this many of the entry's fields, each name and value cut to this
# many bytes: an entry may be huge or have thousands of fields (the letter names the entry).
LETTER_FIELDS, LETTER_BYTES, DETAIL_CHARS = 32, 1_024, 500
# Failures that are not about the entry in hand: Railyard's own (a dependency unavailable, a
# rebuild refused) and the disk. They are never dead-lettered.
NOT_THE_ENTRY = (RailyardError, OSError)

# KEYS: dead-letter stream, its index; ARGV: entry id, reason, detail, original fields (name, value, ...).
# The index records each entry once: several groups may refuse it, and a redelivery must not repeat it.
DEAD_LETTER = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = 'reason'
fields[#fields + 1] = ARGV[2]
fields[#fields + 1] = 'detail'
fields[#fields + 1] = ARGV[3]
fields[#fields + 1] = 'entry'
fields[#fields + 1] = ARGV[1]
redis.call('XADD', KEYS[1], '*', unpack(fields))
return 1
"""

T = TypeVar("T")
Fields = Mapping[bytes, bytes]
Entry = tuple[bytes, dict[bytes, bytes] | None]  # id and fields (None: deleted while pending)
Parsed = tuple[bytes, Fields, Any]  # id, fields, what the group's ``parse`` made of them


class Refusal(Exception):
    """An entry the work will not do: dead-lettered with ``reason`` (a word) and what broke."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class Transport(Protocol):
    """A log read in consumer groups (Valkey Streams here; Kafka would be another)."""

    stream: str

    def ensure_group(self, group: str) -> None: ...
    def read(self, group: str, consumer: str, start: str, count: int, block_ms: int | None) -> list[Entry]: ...
    def claim(self, group: str, consumer: str, idle_ms: int, count: int) -> list[Entry]: ...
    def ack(self, group: str, entry_ids: Sequence[bytes]) -> None: ...
    def pending(self, group: str) -> int: ...
    def dead_letter(self, entry_id: bytes, fields: Fields, reason: str, detail: str) -> bool: ...


@dataclass(frozen=True)
class ValkeyStreams:
    """A Valkey (Redis) stream, its dead-letter stream and the index that records each entry once."""

    client: redis.Redis
    stream: str
    dead_letters: str
    dead_letter_index: str

    def ensure_group(self, group: str) -> None:
        """The group exists; a new group starts at the stream's first entry."""
        with reachable(self.client):
            try:
                self.client.xgroup_create(self.stream, group, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    def read(self, group: str, consumer: str, start: str, count: int, block_ms: int | None) -> list[Entry]:
        """``start`` "0": this consumer's own pending entries; ">": new ones."""
        with reachable(self.client):
            reply = self.client.xreadgroup(group, consumer, {self.stream: start}, count=count, block=block_ms)
        return reply[0][1] if reply else []

    def claim(self, group: str, consumer: str, idle_ms: int, count: int) -> list[Entry]:
        with reachable(self.client):
            _, claimed, _ = self.client.xautoclaim(self.stream, group, consumer, idle_ms, count=count)
        return claimed

    def ack(self, group: str, entry_ids: Sequence[bytes]) -> None:
        with reachable(self.client):
            self.client.xack(self.stream, group, *entry_ids)

    def pending(self, group: str) -> int:
        with reachable(self.client):
            return self.client.xpending(self.stream, group)["pending"]

    def dead_letter(self, entry_id: bytes, fields: Fields, reason: str, detail: str) -> bool:
        """Record a refused entry with its reason (and what broke, in words), its fields as they
        were (bytes, cut short when long); False when it was recorded before."""
        kept = list(fields.items())[:LETTER_FIELDS]
        args = [entry_id, reason, detail[:DETAIL_CHARS], *(_cut(item) for pair in kept for item in pair)]
        with reachable(self.client):
            return bool(self.client.eval(DEAD_LETTER, 2, self.dead_letters, self.dead_letter_index, *args))


@dataclass(frozen=True)
class Work:
    """What a group does: ``parse`` one entry (raise ``Refusal`` to refuse it), then ``do`` a
    batch of parsed entries (it may refuse some through ``Consumer.refuse``)."""

    parse: Callable[[bytes, Fields], Any]
    do: Callable[[str, list[Parsed]], None]
    # Optional: begin a batch's work and return what completes it (``do``'s effect), so the
    # consumer reads and starts the next batch meanwhile; what fails is done again with ``do``.
    start: Callable[[str, list[Parsed]], Callable[[], None]] | None = None


def entry_time(entry_id: bytes) -> float:
    """When the stream took an entry (the milliseconds of its id), in seconds since 1970."""
    return int(entry_id.split(b"-", 1)[0]) / 1_000


@dataclass
class Consumer:
    """One consumer (``name``) in each group of ``work``, reading ``batch_size`` entries at a time."""

    transport: Transport
    work: dict[str, Work]
    name: str | None = None
    batch_size: int = 1_000
    claim_idle_s: float = 60.0
    flush_ms: float = 0.0  # 0: a batch is what one read returns
    stop: threading.Event = field(default_factory=threading.Event)
    unavailable: tuple[type[Exception], ...] = (OnlineStoreUnavailable,)  # waited for: never the entry's fault
    not_the_entry: tuple[type[Exception], ...] = NOT_THE_ENTRY  # raised, never dead-lettered
    on_dead_letter: Callable[[str], None] | None = None  # told each new dead letter's reason
    entries: dict[str, int] = field(init=False)  # entries done per group
    dead_letters: int = field(init=False, default=0)  # entries this consumer dead-lettered
    # The batch started and not completed: group, entries, parsed entries, what completes it.
    in_flight: tuple[str, list[Entry], list[Parsed], Callable[[], None]] | None = field(init=False, default=None)
    _claim_at: dict[str, float] = field(init=False, default_factory=dict)  # no claim before (monotonic s)

    def __post_init__(self) -> None:
        self.name = self.name or f"{socket.gethostname()}-{os.getpid()}"
        self.entries = dict.fromkeys(self.work, 0)
        self.unavailable = (OnlineStoreUnavailable, *self.unavailable)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.work)

    def start(self) -> None:
        """Every group exists (waiting for the store)."""
        for group in self.groups:
            self.retrying(lambda: self.transport.ensure_group(group))

    def run(self, until_idle: bool = False) -> None:
        """Consume until ``stop`` is set or, with ``until_idle``, until no entry is new or pending.
        ``start`` must have been called."""
        for group in self.groups:  # what this consumer left pending when it stopped, first
            before = self.entries[group]
            while self.step(group, "0"):
                pass
            if self.entries[group] > before:
                log.info("%s: took back %d entries left pending by %s", group, self.entries[group] - before, self.name)
        while not self.stop.is_set():
            busy = [self.step(group, ">") for group in self.groups]
            if any(busy):
                continue
            self.complete()
            if until_idle and not any(self.retrying(lambda: self.transport.pending(g)) for g in self.groups):
                break
            # Idle: block on the stream in the first group instead of sleeping, so a new entry
            # is handled within milliseconds, not a poll interval.
            self.step(self.groups[0], ">", block_ms=int(POLL_S * 1000))
        self.complete()

    def step(self, group: str, start: str, block_ms: int | None = None) -> bool:
        """Handle one batch: ``start`` "0" for this consumer's own pending entries, ">" for
        entries idle long enough to claim, else new ones (waiting up to ``block_ms`` for them).
        False when there was none. With a batch in flight, new entries are read without waiting
        (none: the batch in flight is completed, then the read may wait)."""
        entries = []
        if start == ">" and self.in_flight is not None:
            entries = self.retrying(lambda: self._next_batch(group, start, None, wait=False))
        if not entries:
            self.complete()  # the in-flight entries are this consumer's pending ones: never read twice
            entries = self.retrying(lambda: self._next_batch(group, start, block_ms))
        if not entries:
            return False
        self._handle(group, entries, overlap=start == ">")
        return True

    def _next_batch(self, group: str, start: str, block_ms: int | None, wait: bool = True) -> list[Entry]:
        if start == ">" and time.monotonic() >= self._claim_at.get(group, 0.0):
            claimed = self.transport.claim(group, self.name, int(self.claim_idle_s * 1000), self.batch_size)
            if claimed:
                log.info("%s: claimed %d entries left pending by a stopped consumer", group, len(claimed))
                return claimed
            self._claim_at[group] = time.monotonic() + self.claim_idle_s / CLAIM_CHECKS
        entries = self.transport.read(group, self.name, start, self.batch_size, block_ms)
        if start == ">" and entries and self.flush_ms > 0 and wait:
            entries = fill(entries, self._read_more(group), self.batch_size, self.flush_ms)
        return entries

    def _read_more(self, group: str) -> Callable[[int, int], list[Entry]]:
        def read(count: int, block_ms: int) -> list[Entry]:
            try:
                return self.transport.read(group, self.name, ">", count, block_ms)
            except self.unavailable:  # the batch so far is delivered: handle it, retry later
                return []

        return read

    def _handle(self, group: str, entries: list[Entry], overlap: bool = False) -> None:
        work, parsed = self.work[group], []
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending: nothing left to do
                continue
            try:
                parsed.append((entry_id, fields, work.parse(entry_id, fields)))
            except Refusal as refused:
                self.refuse(group, entry_id, fields, refused.reason, str(refused))
            except Exception as error:  # noqa: BLE001 - whatever fails on one entry refuses that entry only
                self._refuse_unexpected(group, entry_id, fields, error)
        started = self._start(group, parsed, work.start) if overlap and parsed and work.start else None
        self.complete()  # the batch before this one, whose work overlapped with reading this one
        if started is not None:
            self.in_flight = (group, entries, parsed, started)
            return
        if parsed:
            self._batch_or_one_by_one(group, parsed, work.do)
        self._ack(group, entries)

    def _start(self, group: str, parsed: list[Parsed], start: Callable) -> Callable[[], None] | None:
        """What completes the batch's started work; None when starting failed (then ``do`` it)."""
        try:
            return start(group, parsed)
        except Exception as error:  # noqa: BLE001 - done again with ``do``, whose failures are handled
            log.info("%s: a batch could not be started (%r): done without overlap", group, error)
            return None

    def complete(self) -> None:
        """Complete the batch in flight (if any; when that fails, ``do`` it), then acknowledge it."""
        if self.in_flight is None:
            return
        group, entries, parsed, finish = self.in_flight
        self.in_flight = None  # raised out of here: its entries stay pending, read again from "0"
        try:
            finish()
        except Exception as error:  # noqa: BLE001 - done again with ``do``, whose failures are handled
            log.info("%s: a started batch failed (%r): done again without overlap", group, error)
            self._batch_or_one_by_one(group, parsed, self.work[group].do)
        self._ack(group, entries)

    def _ack(self, group: str, entries: list[Entry]) -> None:
        self.retrying(lambda: self.transport.ack(group, [entry_id for entry_id, _ in entries]))
        self.entries[group] += len(entries)

    def _batch_or_one_by_one(self, group: str, parsed: list[Parsed], do: Callable[[str, list], None]) -> None:
        """``do`` on the whole batch; if that fails for a reason that is not ``not_the_entry``,
        on each entry alone, and an entry that fails alone is refused."""
        try:
            do(group, parsed)
            return
        except self.not_the_entry:
            raise
        except Exception as error:  # noqa: BLE001 - one of its entries may be the cause: find it
            log.warning("%s: a batch of %d entries failed (%r): one at a time now", group, len(parsed), error)
        for one in parsed:
            try:
                do(group, [one])
            except self.not_the_entry:
                raise
            except Exception as error:  # noqa: BLE001
                self._refuse_unexpected(group, one[0], one[1], error)

    def refuse(self, group: str, entry_id: bytes, fields: Fields, reason: str, detail: str) -> None:
        """Dead-letter an entry (once, whichever group refuses it first)."""
        if self.retrying(lambda: self.transport.dead_letter(entry_id, fields, reason, detail)):
            log.warning("%s: entry %s dead-lettered: %s", group, entry_id.decode(), detail)
            self.dead_letters += 1
            if self.on_dead_letter is not None:
                self.on_dead_letter(reason)

    def _refuse_unexpected(self, group: str, entry_id: bytes, fields: Fields, error: Exception) -> None:
        log.error("%s: entry %s failed unexpectedly", group, entry_id.decode(), exc_info=error)
        self.refuse(group, entry_id, fields, f"unexpected_{type(error).__name__}", f"{type(error).__name__}: {error}")

    def retrying(self, call: Callable[[], T], on_retry: Callable[[Exception], None] | None = None) -> T:
        """``call()``, again and again with capped exponential backoff while it raises one of
        ``unavailable`` (until stopped: then the error is raised, and unacknowledged entries stay
        pending). ``on_retry`` sees each error before the wait."""
        delay = FIRST_RETRY_S
        while True:
            try:
                return call()
            except self.unavailable as error:
                if self.stop.is_set():
                    raise
                if on_retry is not None:
                    on_retry(error)
                log.warning("%s; retrying in %.1f s (entries stay pending in the stream)", error, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)


def fill(
    first: list[Entry],
    read: Callable[[int, int], list[Entry]],
    size: int,
    flush_ms: float,
    clock: Callable[[], float] = time.monotonic,
) -> list[Entry]:
    """A micro-batch: ``first`` and what ``read(count, block_ms)`` returns next, until ``size``
    entries or ``flush_ms`` since ``first`` came (a read that returns nothing ends it too)."""
    batch, until = list(first), clock() + flush_ms / 1000
    while len(batch) < size:
        left_ms = int((until - clock()) * 1000)
        if left_ms <= 0:
            break
        more = read(size - len(batch), left_ms)
        if not more:
            break
        batch += more
    return batch


def _cut(value: bytes | str) -> bytes:
    """A field's name or value as a dead letter records it: its first ``LETTER_BYTES`` bytes."""
    value = value if isinstance(value, bytes) else value.encode()
    if len(value) <= LETTER_BYTES:
        return value
    return value[:LETTER_BYTES] + f"…(+{len(value) - LETTER_BYTES:,} bytes)".encode()
