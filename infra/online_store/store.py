"""The online feature store: each user's and movie's declared aggregates (``railyard.feature_spec``;
``features.aggregate_totals`` computes the same numbers offline) in Valkey/Redis, read by the
serving side in the model's input layout. ``keys`` documents the layout, ``scripts`` the Lua
generated from the declarations.

- ``read_pairs``: one Lua script reads the current namespace and every hash it needs, so a
  reader sees one state of the store, never half a switch or half an event.
- ``apply``: one Lua script per batch records each event's id and rating and applies it to its
  user's and movie's aggregates (sums add, latest values are replaced by a later event's) in
  the same atomic step, so an event applied twice (a
  redelivered or replayed entry) counts once, and a second rating of it with another value is
  reported as a conflict and counts not at all (the first rating wins, ``railyard.events``).
- ``rebuild``: the aggregates of the batch data, written into a fresh namespace, then the
  pointer switches in one step (and the stream's ``online`` group re-reads the stream from the
  start, so events applied to the old namespace and not in the batch data are applied again).
- ``read_candidates``: the ranking service's candidates for a user (the most popular movies the
  user has not rated) and their model inputs, in one Lua call. ``apply`` and ``rebuild`` keep the
  candidate data (each user's rated movies, the movies' ratings counts) with the aggregates.

Polars is imported by the rebuild alone: readers (`railyard status`, `score`, the ranking
service) do not pay for it.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import hiredis
import numpy as np
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from infra.online_store import keys, scripts, valkey_process
from railyard import feature_spec as spec
from railyard.errors import RailyardError, Refused
from railyard.events import RatingEvent, all_distinct

if TYPE_CHECKING:
    import polars as pl

    from railyard.settings import Settings

SOCKET_TIMEOUT_S = 5.0
# redis-py retries a command whose connection broke; a few quick tries, then the caller is told
# (apply is idempotent, so a retried batch still counts once).
RETRY = Retry(ExponentialBackoff(cap=0.5, base=0.05), 2)
PIPELINE_CHUNK = 1_000  # commands per round trip when a namespace is written
WRITE_CONNECTIONS = 2  # round trips in flight at once when a namespace is written
MEMBERS_CHUNK = 10_000  # members (or fields) per SADD (HSET)
REBUILD_LOCK_S = 3_600  # a crashed rebuild frees the lock after this
# Replies of a server that cannot do the work now, whatever it is (out of memory, a replica, its
# disk failing: MISCONF, a long script: BUSY): the store is unavailable, not the request wrong.
REFUSING_NOW = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError)

CANDIDATES_WINDOW = (200, 1_000)  # movies a ZREVRANGE step looks at: at least, at most

# KEYS: pointer, stream; ARGV: new namespace, the group that applies events. The group re-reads
# the stream in the same step: no event can slip between the switch and the re-read.
SWITCH = """
redis.call('SET', KEYS[1], ARGV[1])
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[2], '0', 'MKSTREAM')  -- BUSYGROUP when it exists: fine
redis.call('XGROUP', 'SETID', KEYS[2], ARGV[2], '0')
"""


@dataclass(frozen=True)
class Applied:
    """What ``OnlineStore.apply`` did with a batch of events."""

    new: int  # events counted now (the others were counted before)
    conflicts: list[tuple[int, float]]  # (place in the batch, rating counted) of each second rating refused


@dataclass(frozen=True)
class Candidates:
    """A user's candidates, most popular first, and the model inputs of each (user, movie) pair."""

    movie_ids: np.ndarray  # int64 [n]
    users: np.ndarray  # float64 [n, USER_WIDTH] (the same row n times)
    movies: np.ndarray  # float64 [n, MOVIE_WIDTH]
    popular: int  # movies the store knows a ratings count of
    kept: bool  # False: the namespace was built before the store kept candidate data (rebuild it)


class OnlineStoreUnavailable(RailyardError):
    """The online store did not answer."""

    next_step = (
        "start it (`railyard online-store start`) or check RAILYARD_ONLINE_STORE_URL, then try again; "
        "published events wait in the stream"
    )


class OnlineStoreEmpty(RailyardError):
    """The online store holds no features yet (no current namespace)."""

    next_step = "`railyard ingest --rebuild` builds them from the batch data (`railyard ingest` does too when empty)"


class RebuildRunning(RailyardError):
    """Another process is rebuilding the online store (one rebuild at a time)."""

    next_step = "wait for it to finish (its result is the same batch data); readers keep the current features"


class RebuildRefused(Refused):
    """Batch data the online store cannot be built from; nothing was changed."""

    next_step = "fix the batch data (`railyard run` validates it) and rebuild; the online store is unchanged"


def connect(settings: Settings) -> OnlineStore:
    """The store at RAILYARD_ONLINE_STORE_URL, or the embedded server's (started if needed),
    whose port is read again from its state at each new connection: a client whose connection
    failed finds the server started again on another port."""
    url = store_url(settings)
    if settings.online_store_url is not None:
        return connect_url(url)  # fixed: nothing to read again
    return connect_url(url, connection_class=EmbeddedConnection, server_dir=valkey_process.server_dir(settings))


def store_url(settings: Settings) -> str:
    """RAILYARD_ONLINE_STORE_URL, or the embedded server's (started if needed); it may hold a password."""
    if settings.online_store_url is not None:
        return settings.online_store_url.get_secret_value()
    return valkey_process.url(valkey_process.server_dir(settings), valkey_process.ensure_valkey(settings))


def connect_url(url: str, **options) -> OnlineStore:
    """The store at ``url`` (``options``: more of redis-py's connection options)."""
    client = redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S, retry=RETRY, **options
    )
    return OnlineStore(client)


class EmbeddedConnection(redis.Connection):
    """A connection to a home's embedded server that takes the server's port from its state each
    time it connects (redis-py connects again after a failure)."""

    def __init__(self, *, server_dir: Path, **options):
        self.server_dir = server_dir
        super().__init__(**options)

    def _connect(self):
        if (state := valkey_process.read_state(self.server_dir)) is not None:
            self.port = state.port
        return super()._connect()


@contextmanager
def reachable(client: redis.Redis):
    """Redis errors that mean "no answer", "not now" or "no features" as Railyard's errors."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise OnlineStoreUnavailable(f"the online store at {_address(client)} does not answer ({error})") from error
    except redis.ResponseError as error:
        if "NONAMESPACE" in str(error):
            raise OnlineStoreEmpty("the online store holds no features yet") from error
        if isinstance(error, REFUSING_NOW) or str(error).startswith(("BUSY", "MISCONF")):
            raise OnlineStoreUnavailable(
                f"the online store at {_address(client)} refuses work for now ({error})"
            ) from error
        raise


class OnlineStore:
    def __init__(self, client: redis.Redis):
        self.client = client
        # Generated from the declared aggregates as they are now (``scripts``).
        self._read_pairs = client.register_script(scripts.read_pairs())
        self._apply = client.register_script(scripts.apply())
        self._switch = client.register_script(SWITCH)
        self._read_candidates = client.register_script(scripts.read_candidates())

    def namespace(self) -> str | None:
        with reachable(self.client):
            current = self.client.get(keys.POINTER)
        return current.decode() if current is not None else None

    def read_pairs(self, user_ids: Sequence[int], movie_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Float64 model inputs per (user, movie) pair: users ``[n, USER_WIDTH]``, movies
        ``[n, MOVIE_WIDTH]``; an unknown entity is zeros (a movie keeps its catalogue genres)."""
        if len(user_ids) != len(movie_ids):
            raise ValueError(f"{len(user_ids)} user ids but {len(movie_ids)} movie ids: pass one of each per pair")
        users, user_rows = np.unique(np.asarray(user_ids, np.int64), return_inverse=True)
        movies, movie_rows = np.unique(np.asarray(movie_ids, np.int64), return_inverse=True)
        with reachable(self.client):
            user_values, movie_values, genres = self._read_pairs(
                keys=[keys.POINTER], args=[keys.NAMESPACES, len(users), *users.tolist(), *movies.tolist()]
            )
        return model_inputs(user_values, movie_values, genres, user_rows, movie_rows)

    def read_candidates(self, user_id: int, count: int) -> Candidates:
        """The ``count`` most popular movies ``user_id`` has not rated (fewer when the store knows
        fewer) and their model inputs, in one round trip (one state of the store)."""
        if count < 1:
            raise ValueError(f"ask for at least one candidate, not {count}")
        low, high = CANDIDATES_WINDOW
        window = min(max(2 * count, low), high)
        with reachable(self.client):
            ids, user_values, movie_values, genres, popular, kept = self._read_candidates(
                keys=[keys.POINTER], args=[keys.NAMESPACES, int(user_id), count, window]
            )
        movie_ids = np.array([int(movie) for movie in ids], np.int64)
        users, movies = model_inputs(
            user_values, movie_values, genres, np.zeros(len(ids), np.intp), np.arange(len(ids))
        )
        return Candidates(movie_ids, users, movies, int(popular), bool(kept))

    def apply(self, events: Sequence[RatingEvent]) -> Applied:
        """Add the events not applied yet to the current namespace, in one atomic step; an event
        applied before with another rating is a conflict (the first rating wins)."""
        if not events:
            return Applied(0, [])
        args: list = [keys.NAMESPACES]
        for event in events:
            label = int(event.rating >= spec.POSITIVE_RATING)
            args += [event.user_id, event.movie_id, repr(event.rating), label, event.timestamp]
        with reachable(self.client):
            new, conflicts = self._apply(keys=[keys.POINTER], args=args)
        pairs = zip(conflicts[::2], conflicts[1::2])
        return Applied(int(new), [(int(place) - 1, float(rating)) for place, rating in pairs])

    def rebuild(self, ratings: pl.DataFrame, movies: pl.DataFrame | None, if_empty: bool = False) -> str | None:
        """Materialize the aggregates of ``ratings`` (every event marked applied) and the movie
        catalogue into a fresh namespace, switch to it, drop the others; the new namespace. With
        ``if_empty``, only when the store holds none, as seen under the rebuild lock (None: it did)."""
        ratings = checked_batch(ratings)
        with self.rebuilding(if_empty) as namespace:
            if namespace is not None:
                self.write(namespace_commands(namespace, ratings, movies))
        return namespace

    @contextmanager
    def rebuilding(self, if_empty: bool = False) -> Iterator[str | None]:
        """A fresh namespace to write (``write``, from any process) while readers keep the current
        one; switched to when the block ends, dropped when it fails. One rebuild at a time. With
        ``if_empty``, None when the store holds a namespace by the time the lock is held (a run
        that found the store empty may find another run's fill switched in meanwhile)."""
        namespace = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(3)}"
        lock = self.client.lock(keys.REBUILD_LOCK, timeout=REBUILD_LOCK_S, blocking=False)
        with reachable(self.client):
            if not lock.acquire():
                raise RebuildRunning("another rebuild of the online store is running")
            try:
                current = self.namespace()
                if if_empty and current is not None:
                    yield None
                    return
                try:
                    yield namespace
                except BaseException:
                    self._drop_namespaces(keep=current)  # the half-written one
                    raise
                self._switch(keys=[keys.POINTER, keys.STREAM], args=[namespace, keys.ONLINE_GROUP])
                self._drop_namespaces(keep=namespace)  # the old one, and any a crashed rebuild left
            finally:
                lock.release()

    def write(self, commands: Iterable[tuple]) -> None:
        """Run ``commands`` (a namespace's, from the functions below) in pipelined round trips on
        WRITE_CONNECTIONS connections at once, so the server works on one chunk while this process
        builds and packs the next (a thread waiting on its socket lets the others run). The commands
        of a namespace commute (distinct keys, fields and members), except that the last chunk (the
        meta command closes ``namespace_commands``) runs once every other one succeeded. A chunk that
        fails fails the write, after the chunks in flight end; at most 2 x WRITE_CONNECTIONS chunks
        wait in flight (memory stays flat)."""
        with reachable(self.client), ThreadPoolExecutor(WRITE_CONNECTIONS, "online-store-write") as pool:
            in_flight: deque[Future] = deque()
            try:
                chunks = _chunks(commands, PIPELINE_CHUNK)
                chunk = next(chunks, [])
                for following in chunks:
                    if len(in_flight) == 2 * WRITE_CONNECTIONS:
                        in_flight.popleft().result()
                    in_flight.append(pool.submit(self._execute, chunk))
                    chunk = following
                while in_flight:
                    in_flight.popleft().result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # the chunks not started yet: the write failed
                raise
            self._execute(chunk)

    def _execute(self, commands: list[tuple]) -> None:
        """One round trip: ``commands`` packed by hiredis in one call each (redis-py's pipeline
        packs each argument in Python: a third of a fill's time), every reply read, the first error
        raised. A broken connection is tried again (RETRY): the commands write the same values."""
        packed = b"".join([hiredis.pack_command(command) for command in commands])
        pool = self.client.connection_pool
        connection = pool.get_connection()
        try:
            connection.retry.call_with_retry(
                lambda: _round_trip(connection, packed, len(commands)), lambda _error: connection.disconnect()
            )
        finally:
            pool.release(connection)

    def state(self) -> dict:
        """What the store holds and how far the stream's consumers are."""
        with reachable(self.client):
            namespace = self.namespace()
            meta = self.client.hgetall(keys.meta_key(namespace)) if namespace else {}
            groups = {}
            if self.client.exists(keys.STREAM):
                for group in self.client.xinfo_groups(keys.STREAM):
                    groups[_text(group["name"])] = {"pending": group["pending"], "lag": group.get("lag")}
            return {
                "key_prefix": keys.PREFIX,  # the declarations' layout the store is read and written in
                "namespace": namespace,
                "events_applied": int(meta.get(b"events", 0)),
                "last_event_ts": int(meta[b"last_ts"]) if b"last_ts" in meta else None,
                "stream_length": self.client.xlen(keys.STREAM),
                "dead_letters": self.client.xlen(keys.DEAD_LETTERS),
                "groups": groups,
            }

    def _drop_namespaces(self, keep: str | None) -> None:
        doomed = [
            key
            for key in self.client.scan_iter(match=keys.NAMESPACES + "*", count=1_000)
            if keys.namespace_of(key.decode()) != keep
        ]
        for start in range(0, len(doomed), PIPELINE_CHUNK):
            self.client.unlink(*doomed[start : start + PIPELINE_CHUNK])


def model_inputs(
    user_values: list, movie_values: list, genres: list, user_rows: np.ndarray, movie_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Hash fields as read (one list per distinct user and movie, the movies' genre indexes) as the
    model's input rows per pair: missing fields are 0, a time is its day and second
    (``feature_spec.vector_part``), genres one-hot."""
    genre_slots = spec.layout("movie")[spec.MOVIE_GENRES]
    user_table = _vectors("user", user_values)
    movie_table = np.zeros((len(movie_values), spec.width("movie")), np.float64)
    movie_table[:, : genre_slots.start] = _vectors("movie", movie_values)
    for row, indexes in enumerate(genres):
        for genre in (indexes or b"").split(b","):
            if genre:
                movie_table[row, genre_slots.start + int(genre)] = 1.0
    return user_table[user_rows], movie_table[movie_rows]


def _vectors(entity: str, values: list) -> np.ndarray:
    """An entity's declared fields as read (one list per entity) as its aggregates' vector slots."""
    raw = np.array([_numbers(row) for row in values], np.float64).reshape(len(values), len(keys.fields(entity)))
    parts, start = [], 0
    for aggregate in spec.aggregates(entity):
        parts.append(spec.vector_part(aggregate, raw[:, start : start + len(aggregate.fields)]))
        start += len(aggregate.fields)
    return np.concatenate(parts, axis=1) if parts else raw


def namespace_commands(namespace: str, ratings: pl.DataFrame, movies: pl.DataFrame | None) -> Iterator[tuple]:
    """The commands that write a namespace holding exactly ``ratings`` (as ``checked_batch``
    returns them) and the movie catalogue; zero fields are left out (missing is 0)."""
    from railyard.features import labelled, movie_genres  # Polars: a rebuild's, not a reader's

    genres = movie_genres(movies)
    rows = labelled(ratings)
    yield from user_commands(namespace, rows, genres)
    yield from movie_commands(namespace, rows, genres)
    yield from catalogue_commands(namespace, genres)
    last_ts = int(ratings.get_column("timestamp").max()) if ratings.height else None
    yield meta_command(namespace, ratings.height, last_ts)


def user_commands(namespace: str, rows: pl.DataFrame, genres: pl.DataFrame) -> Iterator[tuple]:
    """The user side of a namespace for ``rows`` (checked ratings, ``labelled``) holding every rating of its users
    (a user partition will do): aggregates, applied events (with their ratings), rated movies."""
    import polars as pl

    from railyard.features import user_totals

    yield from aggregate_commands(namespace, "user", rows, user_totals(rows, genres))
    marks = rows.group_by("userId").agg(
        pl.format("{}:{}", "movieId", "timestamp").alias("events"), pl.col("rating").cast(pl.String)
    )
    for user, events, ratings in marks.iter_rows():  # a user's events are distinct (``checked_batch``)
        for start in range(0, len(events), MEMBERS_CHUNK):
            chunk = slice(start, start + MEMBERS_CHUNK)
            yield ("HSET", keys.applied_key(namespace, user), *_interleaved(events[chunk], ratings[chunk]))
    rated = rows.group_by("userId").agg(pl.col("movieId").unique())  # a user's candidates exclude these
    for user, movie_ids in rated.iter_rows():
        for start in range(0, len(movie_ids), MEMBERS_CHUNK):
            yield ("SADD", keys.rated_key(namespace, user), *movie_ids[start : start + MEMBERS_CHUNK])


def movie_commands(namespace: str, rows: pl.DataFrame, genres: pl.DataFrame) -> Iterator[tuple]:
    """The movie side of a namespace for ``rows`` (checked ratings, ``labelled``) holding every rating of its movies
    (a movie partition will do): aggregates and ratings counts (the popularity candidates come from)."""
    from railyard.features import movie_totals

    yield from aggregate_commands(namespace, "movie", rows, movie_totals(rows, genres))
    counts = rows.group_by("movieId").len().select("len", "movieId").to_numpy().ravel().tolist()  # score, member, ...
    for start in range(0, len(counts), 2 * MEMBERS_CHUNK):
        yield ("ZADD", keys.popularity_key(namespace), *counts[start : start + 2 * MEMBERS_CHUNK])


def aggregate_commands(namespace: str, entity: str, rows: pl.DataFrame, totals: pl.DataFrame) -> Iterator[tuple]:
    """Each entity's hash: its declared aggregates over ``rows`` (``totals``: the entity's id and
    them, as ``features`` computes them), zero fields left out, and with ``latest`` aggregates
    the (timestamp, other id) of its latest event, which the apply script compares with."""
    import polars as pl

    declared = spec.aggregates(entity)
    key = spec.ENTITIES[entity]
    bookkeeping: tuple[str, ...] = ()
    if any(aggregate.kind == "latest" for aggregate in declared):
        other = spec.ENTITIES[spec.other_entity(entity)]
        # rows in ``labelled``'s order: each key's last row is its greatest (timestamp, other id)
        latest = rows.group_by(key).agg(pl.col("timestamp").last().alias(keys.LATEST_TS), pl.col(other).last())
        totals = totals.join(latest.rename({other: keys.LATEST_ID}), on=key, how="left")
        bookkeeping = (keys.LATEST_TS, keys.LATEST_ID)
    hash_key = keys.user_key if entity == "user" else keys.movie_key
    # Each aggregate's field (a genre vector: its fields, a tuple), and whether it holds ratings.
    columns = [
        (aggregate.fields if aggregate.per_genre else aggregate.field, aggregate.is_float) for aggregate in declared
    ]
    for entity_id, *values in totals.select(key, *(aggregate.name for aggregate in declared), *bookkeeping).iter_rows():
        fields = []
        for (names, is_float), value in zip(columns, values):
            pairs = zip(names, value) if isinstance(names, tuple) else ((names, value),)
            fields += [item for field, x in pairs if x for item in (field, repr(x) if is_float else x)]
        fields += [item for pair in zip(bookkeeping, values[len(columns) :]) for item in pair]  # a time of 0 too
        if fields:
            yield ("HSET", hash_key(namespace, entity_id), *fields)


def catalogue_commands(namespace: str, genres: pl.DataFrame) -> Iterator[tuple]:
    """Each catalogued movie's genre indexes."""
    for movie, *flags in genres.iter_rows():
        if any(flags):
            indexes = ",".join(str(i) for i, flag in enumerate(flags) if flag)
            yield ("HSET", keys.genres_key(namespace), movie, indexes)


def meta_command(namespace: str, events: int, last_ts: int | None) -> tuple:
    """The namespace's bookkeeping: how many events it holds, the newest one's time."""
    meta = {"events": events, "built_at": int(time.time()), "candidates": 1}
    if last_ts is not None:
        meta["last_ts"] = last_ts
    return ("HSET", keys.meta_key(namespace), *_flat(meta))


def checked_batch(ratings: pl.DataFrame) -> pl.DataFrame:
    """The batch's distinct events; refused when a value is missing or one event has two ratings
    (the store counts an event once: it could not hold both)."""
    import polars as pl

    ratings = ratings.select("userId", "movieId", "rating", "timestamp")
    if ratings.null_count().sum_horizontal().item():
        raise RebuildRefused("the batch data has ratings with missing values")
    if all_distinct(ratings):
        return ratings
    ratings = ratings.unique(maintain_order=True)
    conflicting = ratings.filter(pl.struct("userId", "movieId", "timestamp").is_duplicated())
    if conflicting.height:
        user, movie, _, timestamp = conflicting.row(0)
        raise RebuildRefused(
            f"the batch data rates movie {movie} by user {user} at {timestamp} twice, differently; keep one rating"
        )
    return ratings


def _address(client: redis.Redis) -> str:
    """host:port the client connects to (never the password): an embedded server's from its state."""
    options = client.connection_pool.connection_kwargs
    state = valkey_process.read_state(options["server_dir"]) if "server_dir" in options else None
    return f"{options['host']}:{state.port if state else options['port']}"


def _round_trip(connection: redis.Connection, packed: bytes, replies: int) -> None:
    connection.send_packed_command([packed])
    errors = []
    for _ in range(replies):  # all of them, so the connection is left clean for the next chunk
        try:
            connection.read_response()
        except redis.ResponseError as error:
            errors.append(error)
    if errors:
        raise errors[0]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _interleaved(names: list, values: list) -> list:
    """[name, value, name, value, ...], as HSET takes fields (slice assignment: no per-item Python)."""
    flat = [None] * (2 * len(names))
    flat[::2], flat[1::2] = names, values
    return flat


def _flat(fields: dict) -> list:
    return [item for pair in fields.items() for item in pair]


def _numbers(values: list[bytes | None]) -> list[float]:
    return [float(value) if value is not None else 0.0 for value in values]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
