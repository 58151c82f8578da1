"""The rating event stream (a Valkey stream) and its ingester.

Producers ``publish`` events; each consumer group reads every event once per group:

- ``online`` applies events to the online store (``OnlineStore.apply``) and acknowledges them
  only once the apply returned;
- ``sink`` appends events to the date-partitioned Parquet data set the daily retrain reads,
  one file per batch and date, acknowledged only once the file has its final name.

The ingester is one user of the generic consumer loop (``infra.online_store.consumer``): an
entry is acknowledged only when its work is done, so a crash leaves it pending: a restarted
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
started again on another port is found: ``store.connect``). An error of the data folder's disk
stops the ingester with its entries pending.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import redis

from infra.online_store import keys
from infra.online_store.consumer import Consumer, Parsed, Refusal, ValkeyStreams, Work, entry_time
from infra.online_store.store import Applied, OnlineStore, OnlineStoreEmpty, reachable
from railyard import parquet_io
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
    """One consumer (``consumer``) in each of ``groups``, reading ``batch_size`` entries at a time
    (the loop, its dead letters and retries: ``infra.online_store.consumer.Consumer``)."""

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
        self.store, self.data_dir = store, Path(data_dir)
        work = {keys.ONLINE_GROUP: Work(_parse, self._apply), keys.SINK_GROUP: Work(_parse, self._write)}
        self.consumer = Consumer(
            EventStream(store.client),
            {group: work[group] for group in groups},
            name=consumer,
            batch_size=batch_size,
            claim_idle_s=claim_idle_s,
            stop=stop or threading.Event(),
        )
        self.report = IngestReport(entries=self.consumer.entries)

    @property
    def stop(self) -> threading.Event:
        return self.consumer.stop

    def run(self, until_idle: bool = False) -> IngestReport:
        """Ingest until ``stop`` is set or, with ``until_idle``, until no entry is new or pending."""
        self.consumer.start()
        if keys.ONLINE_GROUP in self.consumer.groups and self.consumer.retrying(self.store.namespace) is None:
            self.consumer.retrying(lambda: rebuild_from_batch(self.store, self.data_dir))
        try:
            self.consumer.run(until_idle)
        finally:
            self.report.dead_letters = self.consumer.dead_letters
        return self.report

    def _apply(self, group: str, events: list[Parsed]) -> None:
        applied = self.consumer.retrying(lambda: self._apply_rebuilding([event for _, _, event in events]))
        self.report.applied += applied.new
        for place, counted in applied.conflicts:
            entry_id, fields, event = events[place]
            detail = (
                f"event {event.event_id} counts with rating {counted}; this entry rates it {event.rating} "
                "(the first rating wins)"
            )
            self.consumer.refuse(group, entry_id, fields, "conflicting_duplicate", detail)

    def _apply_rebuilding(self, events: list[RatingEvent]) -> Applied:
        try:
            return self.store.apply(events)
        except OnlineStoreEmpty:  # flushed, or a server restarted without its data: bootstrap again
            log.warning("the online store holds no features: rebuilding it from the batch data")
            rebuild_from_batch(self.store, self.data_dir)
            return self.store.apply(events)

    def _write(self, group: str, events: list[Parsed]) -> None:
        self.report.files += len(write_sink(self.data_dir, [(entry_id, event) for entry_id, _, event in events]))
        self.report.written += len(events)


class EventStream(ValkeyStreams):
    """The rating event stream, its dead letters and their index; acknowledged through
    ``acknowledge`` (a named point: the crash tests kill an ingester there)."""

    def __init__(self, client: redis.Redis):
        super().__init__(client, keys.STREAM, keys.DEAD_LETTERS, keys.DEAD_LETTER_INDEX)

    def ack(self, group: str, entry_ids: Sequence[bytes]) -> None:
        acknowledge(self, group, entry_ids)


def acknowledge(stream: ValkeyStreams, group: str, entry_ids: Sequence[bytes]) -> None:
    """The entries' work is done: they leave the group's pending list."""
    ValkeyStreams.ack(stream, group, entry_ids)


def _parse(entry_id: bytes, fields: Mapping[bytes, bytes]) -> RatingEvent:
    """An entry's event, judged by the rules at the time the stream took it (so both groups
    judge it alike)."""
    try:
        return parse_event(fields, now=entry_time(entry_id))
    except MalformedEvent as bad:
        raise Refusal(bad.reason, str(bad)) from None


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
