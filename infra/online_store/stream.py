"""The rating event stream (a Valkey stream) and its ingester.

Producers ``publish`` events; each consumer group reads every event once per group:

- ``online`` applies events to the online store (``OnlineStore.apply``) and acknowledges them
  only once the apply returned;
- ``sink`` appends events to the date-partitioned Parquet data set the daily retrain reads,
  one file per batch and date, acknowledged only once the file has its final name.

An entry is acknowledged only when its work is done, so a crash leaves it pending: a restarted
consumer of the same name takes its own pending entries first, and another consumer claims
them (XAUTOCLAIM) once they were idle ``claim_idle_s``. Doing a batch twice is harmless: the
store counts an event once, and a redelivered batch rewrites the same file (a batch cut
differently writes another file, whose repeated rows the loader drops).

No single entry can stop a consumer. Each entry is judged on its own by the event rules
(``railyard.events``, at the time the stream took it, so both groups judge it alike); one that
breaks a rule, or that anything fails on (a bug included), is recorded once in the dead-letter
stream with its reason and acknowledged. When a whole batch fails for a reason that is not the
store or the disk, its entries are tried one at a time, so only the one that fails alone is
refused. A second rating of an event with another value is refused by the online group
(``conflicting_duplicate``: the first rating wins) and dropped by the loaders from the data set.
While the store does not answer (or refuses work for now), the ingester retries with capped
exponential backoff; entries stay pending (each retry connects anew, so a home's embedded store
started again on another port is found: ``store.connect``). An error of the data folder's disk stops the ingester
with its entries pending.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import polars as pl
import redis

from infra.online_store import keys
from infra.online_store.store import Applied, OnlineStore, OnlineStoreEmpty, OnlineStoreUnavailable, reachable
from railyard import parquet_io
from railyard.errors import RailyardError
from railyard.events import FIELDS, MalformedEvent, RatingEvent, parse_event
from railyard.loaders import (
    PARTITION_PREFIX,
    RATINGS_SCHEMA,
    DataLoadError,
    check_columns,
    load_dataset,
    sink_file_name,
)

log = logging.getLogger("railyard.ingest")

PUBLISH_CHUNK = 1_000  # XADDs per round trip
POLL_S = 0.2  # how long an idle ingester blocks on the stream before checking its stop flag
FIRST_RETRY_S, MAX_RETRY_S = 0.2, 5.0  # backoff while the store does not answer
# A dead letter records at most this many of the entry's fields, each name and value cut to this
# many bytes: an entry may be huge or have thousands of fields (the letter names the entry).
LETTER_FIELDS, LETTER_BYTES, DETAIL_CHARS = 32, 1_024, 500
# Failures that are not about the entry in hand: Railyard's own (the store unavailable or empty,
# a rebuild refused) and the data folder's disk. They are never dead-lettered.
NOT_THE_ENTRY = (RailyardError, OSError)

# KEYS: dead-letter stream, its index; ARGV: entry id, reason, detail, original fields (name, value, ...).
# The index records each entry once: both groups refuse it, and a redelivery must not repeat it.
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
Entry = tuple[bytes, dict[bytes, bytes] | None]  # id and fields (None: deleted while pending)


def publish(target: OnlineStore | redis.Redis, events: Iterable[RatingEvent]) -> int:
    """Append the events to the stream; how many."""
    client = target.client if isinstance(target, OnlineStore) else target
    published = 0
    with reachable(client):
        pipe = client.pipeline(transaction=False)
        for published, event in enumerate(events, start=1):
            pipe.xadd(keys.STREAM, event.fields())
            if published % PUBLISH_CHUNK == 0:
                pipe.execute()
        pipe.execute()
    return published


def read_event_file(path: Path) -> list[RatingEvent]:
    """The events of a CSV or Parquet file in the ratings layout; refused whole (nothing is
    published) when a column is missing or a row breaks a rule (judged now)."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
        elif path.suffix == ".parquet":
            frame = parquet_io.read(path)
        else:
            raise DataLoadError(f"{path}: expected a .csv or .parquet file of ratings ({', '.join(FIELDS)})")
    except (pl.exceptions.PolarsError, OSError) as error:
        raise DataLoadError(f"{path} cannot be read: {str(error).splitlines()[0]}") from error
    check_columns(str(path), frame.columns, RATINGS_SCHEMA)
    frame = frame.select(pl.col(name).cast(pl.String) for name in FIELDS)
    events, now = [], time.time()
    for row, fields in enumerate(frame.iter_rows(named=True), start=1):
        try:
            events.append(parse_event(fields, now=now))
        except MalformedEvent as bad:
            raise DataLoadError(f"{path}: data row {row}: {bad}; nothing was published") from None
    return events


def rebuild_from_batch(store: OnlineStore, data_dir: Path) -> str:
    """Rebuild the store from the batch data set; the new namespace. With no data set yet (a
    fresh deployment) the store starts empty: the sink creates the data set from the stream."""
    if not Path(data_dir).exists():
        log.warning("no batch data at %s yet: the online store starts empty", data_dir)
        return store.rebuild(pl.DataFrame(schema=RATINGS_SCHEMA), None)
    dataset = load_dataset(data_dir)
    namespace = store.rebuild(dataset.ratings, dataset.movies)
    log.info("online store rebuilt from %s (%d ratings): namespace %s", data_dir, dataset.ratings.height, namespace)
    return namespace


def ensure_groups(client: redis.Redis) -> None:
    """Both groups exist; a new group starts at the stream's first entry."""
    with reachable(client):
        for group in keys.GROUPS:
            try:
                client.xgroup_create(keys.STREAM, group, id="0", mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise


def acknowledge(client: redis.Redis, group: str, entry_ids: Sequence[bytes]) -> None:
    """The entries' work is done: they leave the group's pending list."""
    with reachable(client):
        client.xack(keys.STREAM, group, *entry_ids)


def dead_letter(
    client: redis.Redis, entry_id: bytes, fields: Mapping[bytes, bytes], reason: str, detail: str = ""
) -> bool:
    """Record a refused entry with its reason (and what broke, in words), its fields as they
    were (bytes, cut short when long); False when it was recorded before."""
    kept = list(fields.items())[:LETTER_FIELDS]
    args = [entry_id, reason, detail[:DETAIL_CHARS], *(_cut(item) for pair in kept for item in pair)]
    with reachable(client):
        return bool(client.eval(DEAD_LETTER, 2, keys.DEAD_LETTERS, keys.DEAD_LETTER_INDEX, *args))


def entry_time(entry_id: bytes) -> float:
    """When the stream took an entry (the milliseconds of its id), in seconds since 1970."""
    return int(entry_id.split(b"-", 1)[0]) / 1_000


def write_sink(data_dir: Path, events: Sequence[tuple[bytes, RatingEvent]]) -> list[Path]:
    """Append (entry id, event) pairs to ``data_dir/ratings/date=YYYY-MM-DD/`` (UTC), one file per
    date named after its first and last entry ids: a redelivered batch overwrites its own file.
    Each file is written under a hidden name, synced and renamed, so a reader never sees half."""
    by_date: dict[str, list[tuple[bytes, RatingEvent]]] = {}
    for entry_id, event in events:
        by_date.setdefault(datetime.fromtimestamp(event.timestamp, UTC).date().isoformat(), []).append(
            (entry_id, event)
        )
    written = []
    for day, rows in sorted(by_date.items()):
        folder = Path(data_dir) / "ratings" / f"{PARTITION_PREFIX}{day}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / sink_file_name(rows[0][0].decode(), rows[-1][0].decode())
        temporary = folder / f".{target.name}.tmp"
        frame = pl.DataFrame(
            [(e.user_id, e.movie_id, e.rating, e.timestamp) for _, e in rows], schema=RATINGS_SCHEMA, orient="row"
        )
        parquet_io.write(frame, temporary)
        _fsync(temporary)
        os.replace(temporary, target)
        _fsync(folder)  # the rename itself survives a power cut before the acknowledgement
        written.append(target)
    return written


@dataclass
class IngestReport:
    entries: dict[str, int] = field(default_factory=dict)  # entries done per group
    applied: int = 0  # events new to the online store
    written: int = 0  # events appended to the data set
    files: int = 0
    dead_letters: int = 0  # entries this ingester dead-lettered


class Ingester:
    """One consumer (``consumer``) in each of ``groups``, reading ``batch_size`` entries at a time."""

    def __init__(
        self,
        store: OnlineStore,
        data_dir: Path,
        *,
        groups: Sequence[str] = keys.GROUPS,
        consumer: str | None = None,
        batch_size: int = 1_000,
        claim_idle_s: float = 60.0,
        stop: threading.Event | None = None,
    ):
        unknown = set(groups) - set(keys.GROUPS)
        if unknown or not groups:
            raise ValueError(f"groups must be among {keys.GROUPS}, got {list(groups)}")
        if keys.SINK_GROUP in groups and (Path(data_dir) / "ratings.csv").exists():
            raise DataLoadError(
                f"{data_dir} holds ratings.csv: the sink writes date-partitioned Parquet, which must not sit "
                "beside it; point RAILYARD_DATA_DIR at a Parquet data set (`railyard generate-data --format parquet`)"
            )
        self.store, self.client, self.data_dir = store, store.client, Path(data_dir)
        self.groups = tuple(groups)
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size, self.claim_idle_ms = batch_size, int(claim_idle_s * 1000)
        self.stop = stop or threading.Event()
        self.report = IngestReport(entries=dict.fromkeys(self.groups, 0))

    def run(self, until_idle: bool = False) -> IngestReport:
        """Ingest until ``stop`` is set or, with ``until_idle``, until no entry is new or pending."""
        self._retrying(lambda: ensure_groups(self.client))
        if keys.ONLINE_GROUP in self.groups and self._retrying(self.store.namespace) is None:
            self._retrying(lambda: rebuild_from_batch(self.store, self.data_dir))
        for group in self.groups:  # what this consumer left pending when it stopped, first
            while self._step(group, "0"):
                pass
        while not self.stop.is_set():
            busy = [self._step(group, ">") for group in self.groups]
            if any(busy):
                continue
            if until_idle and not any(self._retrying(lambda: self._pending(group)) for group in self.groups):
                break
            # Idle: block on the stream in the first group (the online one, by default) instead
            # of sleeping, so a new event is applied within milliseconds, not a poll interval.
            self._step(self.groups[0], ">", block_ms=int(POLL_S * 1000))
        return self.report

    def _step(self, group: str, start: str, block_ms: int | None = None) -> bool:
        """Handle one batch: ``start`` "0" for this consumer's own pending entries, ">" for
        entries idle long enough to claim, else new ones (waiting up to ``block_ms`` for them).
        False when there was none."""
        entries = self._retrying(lambda: self._next_batch(group, start, block_ms))
        if not entries:
            return False
        self._handle(group, entries)
        return True

    def _next_batch(self, group: str, start: str, block_ms: int | None = None) -> list[Entry]:
        with reachable(self.client):
            if start == ">":
                _, claimed, _ = self.client.xautoclaim(
                    keys.STREAM, group, self.consumer, self.claim_idle_ms, count=self.batch_size
                )
                if claimed:
                    log.info("%s: claimed %d entries left pending by a stopped consumer", group, len(claimed))
                    return claimed
            reply = self.client.xreadgroup(
                group, self.consumer, {keys.STREAM: start}, count=self.batch_size, block=block_ms
            )
        return reply[0][1] if reply else []

    def _handle(self, group: str, entries: list[Entry]) -> None:
        events = []  # (entry id, fields, event)
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending: nothing left to do
                continue
            try:
                events.append((entry_id, fields, parse_event(fields, now=entry_time(entry_id))))
            except MalformedEvent as bad:
                self._refuse(group, entry_id, fields, bad.reason, str(bad))
            except Exception as error:  # noqa: BLE001 - whatever fails on one entry refuses that entry only
                self._refuse_unexpected(group, entry_id, fields, error)
        if events:
            self._batch_or_one_by_one(group, events, self._apply if group == keys.ONLINE_GROUP else self._write)
        self._retrying(lambda: acknowledge(self.client, group, [entry_id for entry_id, _ in entries]))
        self.report.entries[group] += len(entries)

    def _batch_or_one_by_one(self, group: str, events: list, work: Callable[[str, list], None]) -> None:
        """``work`` on the whole batch; if that fails for a reason that is not ``NOT_THE_ENTRY``,
        on each event alone, and an event that fails alone is refused."""
        try:
            work(group, events)
            return
        except NOT_THE_ENTRY:
            raise
        except Exception as error:  # noqa: BLE001 - one of its entries may be the cause: find it
            log.warning("%s: a batch of %d events failed (%r): one at a time now", group, len(events), error)
        for one in events:
            try:
                work(group, [one])
            except NOT_THE_ENTRY:
                raise
            except Exception as error:  # noqa: BLE001
                self._refuse_unexpected(group, one[0], one[1], error)

    def _apply(self, group: str, events: list) -> None:
        applied = self._retrying(lambda: self._apply_rebuilding([event for _, _, event in events]))
        self.report.applied += applied.new
        for place, counted in applied.conflicts:
            entry_id, fields, event = events[place]
            detail = (
                f"event {event.event_id} counts with rating {counted}; this entry rates it {event.rating} "
                "(the first rating wins)"
            )
            self._refuse(group, entry_id, fields, "conflicting_duplicate", detail)

    def _apply_rebuilding(self, events: list[RatingEvent]) -> Applied:
        try:
            return self.store.apply(events)
        except OnlineStoreEmpty:  # flushed, or a server restarted without its data: bootstrap again
            log.warning("the online store holds no features: rebuilding it from the batch data")
            rebuild_from_batch(self.store, self.data_dir)
            return self.store.apply(events)

    def _write(self, group: str, events: list) -> None:
        self.report.files += len(write_sink(self.data_dir, [(entry_id, event) for entry_id, _, event in events]))
        self.report.written += len(events)

    def _refuse(self, group: str, entry_id: bytes, fields: Mapping[bytes, bytes], reason: str, detail: str) -> None:
        if self._retrying(partial(dead_letter, self.client, entry_id, fields, reason, detail)):
            log.warning("%s: entry %s dead-lettered: %s", group, entry_id.decode(), detail)
            self.report.dead_letters += 1

    def _refuse_unexpected(self, group: str, entry_id: bytes, fields: Mapping[bytes, bytes], error: Exception) -> None:
        log.error("%s: entry %s failed unexpectedly", group, entry_id.decode(), exc_info=error)
        self._refuse(group, entry_id, fields, f"unexpected_{type(error).__name__}", f"{type(error).__name__}: {error}")

    def _pending(self, group: str) -> int:
        with reachable(self.client):
            return self.client.xpending(keys.STREAM, group)["pending"]

    def _retrying(self, call: Callable[[], T]) -> T:
        """``call()``, again and again with capped exponential backoff while the store does not
        answer (until stopped: then the error is raised, and unacknowledged entries stay pending)."""
        delay = FIRST_RETRY_S
        while True:
            try:
                return call()
            except OnlineStoreUnavailable as error:
                if self.stop.is_set():
                    raise
                log.warning("%s; retrying in %.1f s (entries stay pending in the stream)", error, delay)
                self.stop.wait(delay)
                delay = min(delay * 2, MAX_RETRY_S)


def _cut(value: bytes | str) -> bytes:
    """A field's name or value as a dead letter records it: its first ``LETTER_BYTES`` bytes."""
    value = value if isinstance(value, bytes) else value.encode()
    if len(value) <= LETTER_BYTES:
        return value
    return value[:LETTER_BYTES] + f"…(+{len(value) - LETTER_BYTES:,} bytes)".encode()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
