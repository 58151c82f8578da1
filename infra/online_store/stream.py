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
differently writes another file, whose repeated rows the loader drops). A malformed event is
recorded once in the dead-letter stream, with its reason, and acknowledged. While the store does
not answer, the ingester retries with capped exponential backoff; entries stay pending.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import polars as pl
import redis

from infra.online_store import keys
from infra.online_store.store import OnlineStore, OnlineStoreEmpty, OnlineStoreUnavailable, reachable
from railyard import parquet_io
from railyard.events import FIELDS, MalformedEvent, RatingEvent, parse_event
from railyard.loaders import PARTITION_PREFIX, RATINGS_SCHEMA, DataLoadError, load_dataset

log = logging.getLogger("railyard.ingest")

PUBLISH_CHUNK = 1_000  # XADDs per round trip
POLL_S = 0.2  # how long an idle ingester blocks on the stream before checking its stop flag
FIRST_RETRY_S, MAX_RETRY_S = 0.2, 5.0  # backoff while the store does not answer

# KEYS: dead-letter stream, its index; ARGV: entry id, reason, original fields (name, value, ...).
# The index records each entry once: both groups refuse it, and a redelivery must not repeat it.
DEAD_LETTER = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = 'reason'
fields[#fields + 1] = ARGV[2]
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
    published) when a row breaks a rule."""
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
    frame = frame.select(pl.col(name).cast(pl.String) for name in FIELDS if name in frame.columns)
    events = []
    for row, fields in enumerate(frame.iter_rows(named=True), start=1):
        try:
            events.append(parse_event(fields))
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


def dead_letter(client: redis.Redis, entry_id: bytes, fields: Mapping[bytes, bytes], reason: str) -> bool:
    """Record a refused entry with its reason; False when it was recorded before."""
    args = [entry_id, reason, *(item for pair in fields.items() for item in pair)]
    with reachable(client):
        return bool(client.eval(DEAD_LETTER, 2, keys.DEAD_LETTERS, keys.DEAD_LETTER_INDEX, *args))


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
        target = folder / f"part-{rows[0][0].decode()}-{rows[-1][0].decode()}.parquet"
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
        events = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending: nothing left to do
                continue
            try:
                events.append((entry_id, parse_event(fields)))
            except MalformedEvent as bad:
                if self._retrying(partial(dead_letter, self.client, entry_id, fields, bad.reason)):
                    log.warning("%s: entry %s dead-lettered: %s", group, entry_id.decode(), bad)
                    self.report.dead_letters += 1
        if group == keys.ONLINE_GROUP:
            self.report.applied += self._retrying(lambda: self._apply([event for _, event in events]))
        elif events:
            self.report.files += len(write_sink(self.data_dir, events))
            self.report.written += len(events)
        self._retrying(lambda: acknowledge(self.client, group, [entry_id for entry_id, _ in entries]))
        self.report.entries[group] += len(entries)

    def _apply(self, events: list[RatingEvent]) -> int:
        try:
            return self.store.apply(events)
        except OnlineStoreEmpty:  # flushed, or a server restarted without its data: bootstrap again
            log.warning("the online store holds no features: rebuilding it from the batch data")
            rebuild_from_batch(self.store, self.data_dir)
            return self.store.apply(events)

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


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
