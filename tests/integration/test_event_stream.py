"""The event stream and its ingester against a real Valkey server: what the online store holds
after publish + ingest equals the offline aggregates of the same events, whatever was
published twice, crashed, run twice in parallel, dead-lettered or interrupted by an outage; the
sink's files load back as the events published."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

import polars as pl
import pytest

from infra.online_store import keys, valkey_process
from infra.online_store.store import OnlineStoreUnavailable, connect
from infra.online_store.stream import Ingester, publish, rebuild_from_batch
from railyard.events import RatingEvent
from railyard.loaders import RATINGS_SCHEMA, load_dataset
from railyard.settings import Settings
from tests.support import REPO_ROOT
from tests.support.online_store import (
    as_events,
    assert_store_matches,
    movies_frame,
    railyard,
    ratings_frame,
    write_batch_data,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def batch(railyard_home):
    """Batch data in the default data set's place: 400 ratings and a catalogue of 40 movies."""
    movies = movies_frame(40)
    ratings = ratings_frame(400, users=25, movies=45, seed=11)
    write_batch_data(railyard_home / "data" / "default", ratings, movies)
    return ratings, movies


def test_publish_and_ingest_give_the_offline_aggregates(online_store, batch, railyard_home):
    """Through the CLI: the ingester bootstraps the empty store from the batch data, then applies
    the stream, where some events were published twice and some were already in the batch."""
    ratings, movies = batch
    fresh = ratings_frame(300, users=30, movies=45, seed=12, start_ts=1_780_000_000)
    published = pl.concat([fresh, fresh.head(40), ratings.head(25)])
    published.write_parquet(railyard_home / "events.parquet")

    sent = railyard("publish-events", str(railyard_home / "events.parquet"))
    assert sent.stdout.strip() == f"published 365 events to {keys.STREAM}", sent.stderr
    done = railyard("ingest", "--until-idle", env={"RAILYARD_INGEST_BATCH_SIZE": "50"})
    assert done.returncode == 0, done.stderr
    assert "entries done: online 365, sink 365; 300 events new to the online store" in done.stdout
    assert "online store rebuilt from" in done.stderr

    everything = pl.concat([ratings, fresh])
    assert_store_matches(online_store, everything, movies)
    state = online_store.state()
    assert state["events_applied"] == 700 and state["dead_letters"] == 0
    assert state["groups"] == {"online": {"pending": 0, "lag": 0}, "sink": {"pending": 0, "lag": 0}}
    # The batch data now holds every event once: a rebuild from it is the same store.
    assert sorted(load_dataset(railyard_home / "data" / "default").ratings.rows()) == sorted(everything.rows())
    online_store.rebuild(load_dataset(railyard_home / "data" / "default").ratings, movies)
    assert_store_matches(online_store, everything, movies)


def test_a_crash_between_apply_and_ack_counts_every_event_once(online_store, batch):
    ratings, movies = batch
    online_store.rebuild(ratings, movies)
    fresh = ratings_frame(90, users=30, movies=45, seed=13, start_ts=1_780_000_000)
    publish(online_store, as_events(fresh))
    small = {"RAILYARD_INGEST_BATCH_SIZE": "40"}

    ingest = "ingest --until-idle --group online --consumer".split()
    crashed = railyard(*ingest, "first", env=small, faults_at="infra.online_store.stream:acknowledge")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert online_store.state()["events_applied"] == 440  # the first batch was applied, never acknowledged
    assert online_store.client.xpending(keys.STREAM, keys.ONLINE_GROUP)["pending"] == 40

    again = railyard(*ingest, "second", env=small | {"RAILYARD_INGEST_CLAIM_IDLE_S": "0.2"})
    assert again.returncode == 0, again.stderr
    assert "claimed 40 entries left pending by a stopped consumer" in again.stderr
    assert "entries done: online 90; 50 events new" in again.stdout
    assert_store_matches(online_store, pl.concat([ratings, fresh]), movies)
    assert online_store.state()["groups"]["online"]["pending"] == 0


def test_two_ingesters_in_one_group_count_each_event_once(online_store, batch, railyard_home):
    ratings, movies = batch
    online_store.rebuild(ratings, movies)
    command = [sys.executable, "-m", "cli", "ingest", "--group", "online"]
    env = {"RAILYARD_INGEST_BATCH_SIZE": "10"}
    ingesters = [
        subprocess.Popen(
            [*command, "--consumer", name], env=os.environ | env, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
        )
        for name in ("left", "right")
    ]
    try:
        _wait_for(lambda: len(online_store.client.xinfo_consumers(keys.STREAM, keys.ONLINE_GROUP)) == 2)
        fresh = ratings_frame(3_000, users=60, movies=45, seed=14, start_ts=1_780_000_000)
        publish(online_store, as_events(fresh) + as_events(fresh.head(500)))
        _wait_for(lambda: _settled(online_store, keys.ONLINE_GROUP))
    finally:
        for ingester in ingesters:
            ingester.send_signal(signal.SIGTERM)  # finishes its batch, then reports
        outputs = [ingester.communicate(timeout=30)[0] for ingester in ingesters]
    assert [ingester.returncode for ingester in ingesters] == [0, 0]
    counts = [int(out.split("entries done: online ")[1].split(";")[0].replace(",", "")) for out in outputs]
    assert sum(counts) == 3_500 and min(counts) > 0, counts  # both took part, no entry twice
    assert_store_matches(online_store, pl.concat([ratings, fresh]), movies)
    assert online_store.state()["events_applied"] == 3_400


def test_after_a_rebuild_the_stream_is_applied_again(online_store, batch, railyard_home):
    """Events applied to the old namespace but missing from the batch data come back."""
    ratings, movies = batch
    online_store.rebuild(ratings, movies)
    fresh = ratings_frame(80, users=30, movies=45, seed=17, start_ts=1_780_000_000)
    publish(online_store, as_events(fresh))
    online = Ingester(online_store, railyard_home / "data" / "default", groups=["online"])
    assert online.run(until_idle=True).applied == 80

    online_store.rebuild(ratings.vstack(fresh.head(30)), movies)  # the sink had written 30 of them
    assert online_store.state()["groups"]["online"]["lag"] == 80  # the group starts over
    assert (
        Ingester(online_store, railyard_home / "data" / "default", groups=["online"]).run(until_idle=True).applied == 50
    )
    assert_store_matches(online_store, ratings.vstack(fresh), movies)
    assert online_store.state()["events_applied"] == 480


def test_each_malformed_event_is_dead_lettered_once_with_its_reason(online_store, batch, railyard_home):
    ratings, movies = batch
    online_store.rebuild(ratings, movies)
    good = {"userId": "3", "movieId": "4", "rating": "4.0", "timestamp": "1780000000"}
    broken = {
        "missing_field": {"userId": "3", "movieId": "4", "rating": "4.0"},
        "id_not_integer": good | {"userId": "three"},
        "id_out_of_range": good | {"movieId": "0"},
        "rating_not_number": good | {"rating": "lots"},
        "rating_out_of_range": good | {"rating": "6"},
        "rating_not_half_step": good | {"rating": "3.3"},
        "timestamp_not_integer": good | {"timestamp": "yesterday"},
    }
    client = online_store.client
    client.xadd(keys.STREAM, good)
    ids = {reason: client.xadd(keys.STREAM, fields) for reason, fields in broken.items()}
    client.xadd(keys.STREAM, good | {"userId": "5"})

    ingester = Ingester(online_store, railyard_home / "data" / "default", batch_size=3)
    report = ingester.run(until_idle=True)
    assert report.entries == {"online": 9, "sink": 9} and report.applied == 2 and report.written == 2
    assert report.dead_letters == 7  # both groups refused each, it is recorded once

    letters = {fields[b"entry"]: fields for _, fields in client.xrange(keys.DEAD_LETTERS)}
    assert {letters[entry_id][b"reason"].decode() for entry_id in ids.values()} == set(broken)
    for reason, entry_id in ids.items():
        letter = letters[entry_id]
        assert letter[b"reason"] == reason.encode()
        recorded = {key.decode(): value.decode() for key, value in letter.items()}
        assert recorded.pop("detail").startswith(f"{reason}: ") and recorded.pop("entry") == entry_id.decode()
        assert recorded == broken[reason] | {"reason": reason}
    assert online_store.state()["dead_letters"] == 7
    assert online_store.state()["events_applied"] == 402


def test_the_sink_writes_files_that_load_as_the_events_published(online_store, railyard_home):
    data = railyard_home / "sink-data"
    fresh = ratings_frame(250, users=20, movies=30, seed=15, spacing_s=1_000)  # three days
    publish(online_store, as_events(fresh) + as_events(fresh.head(30)))

    first = Ingester(online_store, data, groups=["sink"], batch_size=40).run(until_idle=True)
    files = sorted(data.rglob("*.parquet"))
    assert first.written == 280 and first.files == len(files) >= 8
    assert {path.parent.name for path in files} == {"date=2026-01-01", "date=2026-01-02", "date=2026-01-03"}
    assert all(path.name.startswith("part-") for path in files) and not list(data.rglob(".*"))

    # A redelivered batch rewrites its own file; one cut differently adds repeats the loader drops.
    online_store.client.xgroup_setid(keys.STREAM, keys.SINK_GROUP, "0")
    Ingester(online_store, data, groups=["sink"], batch_size=40).run(until_idle=True)
    assert sorted(data.rglob("*.parquet")) == files
    online_store.client.xgroup_setid(keys.STREAM, keys.SINK_GROUP, "0")
    Ingester(online_store, data, groups=["sink"], batch_size=64).run(until_idle=True)

    loaded = load_dataset(data)
    assert sorted(loaded.ratings.rows()) == sorted(fresh.rows())
    assert loaded.duplicates_dropped == 280 + 30


def test_an_outage_loses_nothing_and_the_ingester_resumes(tmp_path, railyard_home, batch, caplog):
    """The store stops with entries read but not acknowledged: reads fail with one clear error,
    the ingester retries with backoff, and once the store is back every event counts once."""
    ratings, movies = batch
    settings = Settings(home=tmp_path / "own", local_online_store_port=0)
    state = valkey_process.ensure_valkey(settings)
    try:
        store = connect(settings)
        store.rebuild(ratings, movies)
        fresh = ratings_frame(60, users=30, movies=45, seed=16, start_ts=1_780_000_000)
        publish(store, as_events(fresh))
        # A consumer read ten entries, then the store went away.
        store.client.xreadgroup(keys.ONLINE_GROUP, "worker", {keys.STREAM: ">"}, count=10)
        valkey_process.stop(settings)
        with pytest.raises(OnlineStoreUnavailable, match="does not answer"):
            store.read_pairs([1], [1])

        caplog.set_level(logging.WARNING, "railyard.ingest")
        ingester = Ingester(store, railyard_home / "data" / "default", groups=["online"], consumer="worker")
        outcome = {}
        runner = threading.Thread(target=lambda: outcome.update(report=ingester.run(until_idle=True)))
        runner.start()
        _wait_for(lambda: "retrying in" in caplog.text)
        assert runner.is_alive()
        valkey_process.ensure_valkey(Settings(home=settings.home, local_online_store_port=state.port))
        runner.join(60)
        assert outcome["report"].entries == {"online": 60} and outcome["report"].applied == 60
        assert "entries stay pending in the stream" in caplog.text
        assert_store_matches(store, pl.concat([ratings, fresh]), movies)
        assert store.state()["groups"]["online"]["pending"] == 0
        store.client.close()
    finally:
        valkey_process.stop(settings)


def test_a_store_out_of_memory_is_waited_for_and_nothing_is_dead_lettered(online_store, batch, railyard_home, caplog):
    """A server refusing writes for now (out of memory) is no reason to refuse the entries: the
    ingester waits as for an outage, and applies them once the server takes writes again."""
    ratings, movies = batch
    online_store.rebuild(ratings, movies)
    fresh = ratings_frame(60, users=30, movies=45, seed=24, start_ts=1_780_000_000)
    publish(online_store, as_events(fresh))
    client = online_store.client
    caplog.set_level(logging.WARNING, "railyard.ingest")
    ingester = Ingester(online_store, railyard_home / "data" / "default", groups=["online"])
    outcome = {}
    client.config_set("maxmemory", "1")  # noeviction (the default): every write is refused
    try:
        runner = threading.Thread(target=lambda: outcome.update(report=ingester.run(until_idle=True)))
        runner.start()
        _wait_for(lambda: "refuses work for now" in caplog.text)
        assert runner.is_alive()
    finally:
        client.config_set("maxmemory", "0")
    runner.join(60)
    assert outcome["report"].applied == 60 and outcome["report"].dead_letters == 0
    assert_store_matches(online_store, pl.concat([ratings, fresh]), movies)
    assert online_store.state()["dead_letters"] == 0


def _settled(store, group: str) -> bool:
    info = next(g for g in store.client.xinfo_groups(keys.STREAM) if g["name"].decode() == group)
    return info["pending"] == 0 and info["lag"] == 0


def _wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_a_fresh_deployment_without_batch_data_starts_from_an_empty_store(online_store, railyard_home):
    """No data set yet (a new stack): the store starts empty, the stream fills it and the sink
    creates the data set, which then matches the store."""
    data = railyard_home / "not-yet"
    rebuild_from_batch(online_store, data)
    assert online_store.state()["events_applied"] == 0
    fresh = ratings_frame(120, users=10, movies=20, seed=3)
    publish(online_store, as_events(fresh))
    report = Ingester(online_store, data, batch_size=50).run(until_idle=True)
    assert report.written == 120 and online_store.state()["events_applied"] == 120
    assert_store_matches(online_store, load_dataset(data).ratings, None)


HOSTILE = {
    "huge_movie_id": ({"movieId": "9" * 5_000}, "id_out_of_range"),
    "timestamp_int64_max": ({"timestamp": str(2**63 - 1)}, "timestamp_in_future"),
    "thousands_of_fields": ({f"extra{i}": "x" for i in range(10_000)} | {"rating": None}, "missing_field"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_one_hostile_entry_neither_stops_the_ingester_nor_holds_up_its_batch(case, online_store, batch, railyard_home):
    """Item 2 of issue 32: the entry is dead-lettered with its reason, the valid events around
    it (in the same batch) are applied and written, and nothing stays pending."""
    ratings, movies = batch
    fresh = ratings_frame(30, users=30, movies=45, seed=21, start_ts=1_780_000_000)
    change, reason = HOSTILE[case]
    hostile = {**as_events(fresh.head(1))[0].fields(), "userId": "999", **change}
    client = online_store.client
    entries = [client.xadd(keys.STREAM, event.fields()) for event in as_events(fresh.head(15))]
    bad = client.xadd(keys.STREAM, {name: value for name, value in hostile.items() if value is not None})
    entries += [client.xadd(keys.STREAM, event.fields()) for event in as_events(fresh.tail(15))]

    done = railyard("ingest", "--until-idle")  # one batch of 1,000 holds every entry
    assert done.returncode == 0, done.stderr[-2000:]
    assert "entries done: online 31, sink 31; 30 events new to the online store, 30 written" in done.stdout
    assert_store_matches(online_store, pl.concat([ratings, fresh]), movies)
    state = online_store.state()
    assert state["last_event_ts"] == fresh.get_column("timestamp").max()
    assert state["groups"] == {"online": {"pending": 0, "lag": 0}, "sink": {"pending": 0, "lag": 0}}
    (letter,) = [fields for _, fields in client.xrange(keys.DEAD_LETTERS)]
    assert letter[b"entry"] == bad and letter[b"reason"] == reason.encode()
    data = load_dataset(railyard_home / "data" / "default")
    assert sorted(data.ratings.rows()) == sorted(pl.concat([ratings, fresh]).rows())
    assert railyard("ingest", "--until-idle").returncode == 0  # and the next start is clean too


def test_what_the_stream_accepts_the_retrain_accepts(online_store, railyard_home):
    """Item 3 of issue 32: a rating dated a year ahead (or at 10^11) and a second, different
    rating of an event already rated get through neither path; the first rating wins in both."""
    from railyard.configs import ValidationBounds
    from railyard.validation import validate_ratings

    data = railyard_home / "data" / "default"
    fresh = ratings_frame(200, users=20, movies=30, seed=22, start_ts=1_780_000_000)
    rerated = fresh.row(7, named=True) | {"rating": 0.5 if fresh["rating"][7] != 0.5 else 5.0}
    client = online_store.client
    publish(online_store, as_events(fresh.head(100)))
    ahead = {
        "timestamp_in_future": {
            **as_events(fresh.head(1))[0].fields(),
            "timestamp": str(int(time.time()) + 31_536_000),
        },
        "also_in_future": {**as_events(fresh.head(1))[0].fields(), "timestamp": str(10**11)},
        "conflicting_duplicate": {name: str(value) for name, value in rerated.items()},
    }
    refused = {client.xadd(keys.STREAM, fields): reason for reason, fields in ahead.items()}
    publish(online_store, as_events(fresh.tail(100)))

    done = railyard("ingest", "--until-idle", env={"RAILYARD_INGEST_BATCH_SIZE": "64"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert_store_matches(online_store, fresh, None)  # with the first rating of the re-rated event
    letters = {fields[b"entry"]: fields[b"reason"].decode() for _, fields in client.xrange(keys.DEAD_LETTERS)}
    assert letters == {entry: reason.replace("also_", "timestamp_") for entry, reason in refused.items()}

    dataset = load_dataset(data)
    assert sorted(dataset.ratings.rows()) == sorted(fresh.rows())
    assert dataset.conflicts_dropped == 1  # the sink wrote the second rating; the first one wins
    bounds = ValidationBounds(min_rows=100, max_rows=10_000, min_positive_rate=0.05, max_positive_rate=0.95)
    report = validate_ratings(dataset.ratings, bounds, railyard_home / "reports")
    assert report.success, report.summary()


def test_an_entry_that_trips_a_bug_is_dead_lettered_and_its_batch_goes_on(
    online_store, batch, railyard_home, monkeypatch
):
    """No single entry stops a consumer, whatever fails on it: parsing it, applying it, writing it."""
    from infra.online_store import stream
    from infra.online_store.store import OnlineStore

    ratings, movies = batch
    online_store.rebuild(ratings, movies)
    fresh = ratings_frame(40, users=30, movies=45, seed=23, start_ts=1_780_000_000)
    poisoned = {901: "parse", 902: "apply", 903: "write"}  # users of one event each
    events = as_events(fresh)
    for at, user in ((5, 901), (20, 902), (33, 903)):
        events.insert(at, RatingEvent(user, 1, 4.0, 1_780_000_000 + at))
    publish(online_store, events)
    poison = pl.DataFrame([e for e in events if e.user_id in poisoned], schema=RATINGS_SCHEMA, orient="row")

    def parse(fields, **options):
        event = stream_parse(fields, **options)
        if poisoned.get(event.user_id) == "parse":
            raise KeyError("a bug in parsing")
        return event

    def apply(self, events):
        if any(poisoned.get(event.user_id) == "apply" for event in events):
            raise TypeError("a bug in applying")
        return store_apply(self, events)

    def write(data_dir, events):
        if any(poisoned.get(event.user_id) == "write" for _, event in events):
            raise ValueError("a bug in writing")
        return sink_write(data_dir, events)

    stream_parse, store_apply, sink_write = stream.parse_event, OnlineStore.apply, stream.write_sink
    monkeypatch.setattr(stream, "parse_event", parse)
    monkeypatch.setattr(OnlineStore, "apply", apply)
    monkeypatch.setattr(stream, "write_sink", write)
    report = Ingester(online_store, railyard_home / "data" / "default", batch_size=16).run(until_idle=True)

    by_user = {
        int(fields[b"userId"]): fields[b"reason"].decode()
        for _, fields in online_store.client.xrange(keys.DEAD_LETTERS)
    }
    assert by_user == {
        user: {"parse": "unexpected_KeyError", "apply": "unexpected_TypeError", "write": "unexpected_ValueError"}[kind]
        for user, kind in poisoned.items()
    }
    assert report.dead_letters == 3 and report.entries == {"online": 43, "sink": 43}
    applied = poison.filter(pl.col("userId") == 903)  # only the sink tripped on it
    assert_store_matches(online_store, pl.concat([ratings, fresh, applied]), movies)
    written = poison.filter(pl.col("userId") == 902)  # only the online store tripped on it
    assert sorted(load_dataset(railyard_home / "data" / "default").ratings.rows()) == sorted(
        pl.concat([ratings, fresh, written]).rows()
    )
    assert online_store.state()["groups"] == {"online": {"pending": 0, "lag": 0}, "sink": {"pending": 0, "lag": 0}}


def test_publish_events_refuses_a_file_without_the_rating_columns(online_store, railyard_home):
    """Item 5 of issue 32: a ';'-separated file is refused with the loader's hint, nothing is published."""
    events = railyard_home / "events.csv"
    events.write_text("userId;movieId;rating;timestamp\n1;2;4.0;1780000000\n")
    sent = railyard("publish-events", str(events))
    assert sent.returncode == 2, sent.stdout + sent.stderr
    assert "missing column(s) userId, movieId, rating, timestamp" in sent.stderr
    assert "the header looks like it uses another separator than ','" in sent.stderr
    assert "\nnext: " in sent.stderr and "published" not in sent.stdout
    assert online_store.client.xlen(keys.STREAM) == 0

    renamed = railyard_home / "renamed.csv"
    renamed.write_text("user_id,movieId,rating,timestamp\n1,2,4.0,1780000000\n")
    sent = railyard("publish-events", str(renamed))
    assert sent.returncode == 2 and "did you mean 'user_id' for 'userId'" in sent.stderr


def test_a_running_ingest_follows_the_embedded_store_to_its_new_port(railyard_home, batch, tmp_path):
    """`railyard ingest` keeps working when the home's store stops and starts again on another
    port (the any-free-port setting): it re-reads the address from the store's state."""
    ratings, movies = batch
    settings = Settings(home=railyard_home, local_online_store_port=0)
    before = valkey_process.ensure_valkey(settings)
    log = (tmp_path / "ingest.log").open("w")
    ingest = subprocess.Popen(
        [sys.executable, "-m", "cli", "ingest", "--group", "online"],
        env={key: value for key, value in os.environ.items() if key != "RAILYARD_ONLINE_STORE_URL"},
        cwd=REPO_ROOT,
        stdout=log,
        stderr=log,
    )
    try:
        store = connect(settings)
        _wait_for(lambda: store.namespace() is not None, timeout_s=60)  # bootstrapped from the batch data
        first = ratings_frame(50, users=30, movies=45, seed=18, start_ts=1_780_000_000)
        publish(store, as_events(first))
        _wait_for(lambda: _settled(store, keys.ONLINE_GROUP))

        valkey_process.stop(settings)
        after = valkey_process.ensure_valkey(settings)
        while after.port == before.port:  # the point is another port
            valkey_process.stop(settings)
            after = valkey_process.ensure_valkey(settings)
        store = connect(settings)
        second = ratings_frame(70, users=30, movies=45, seed=19, start_ts=1_790_000_000)
        publish(store, as_events(second))
        _wait_for(lambda: _settled(store, keys.ONLINE_GROUP), timeout_s=60)
        assert_store_matches(store, pl.concat([ratings, first, second]), movies)
        store.client.close()
    finally:
        ingest.send_signal(signal.SIGTERM)
        ingest.wait(30)
        log.close()
        valkey_process.stop(settings)
    assert ingest.returncode == 0, (tmp_path / "ingest.log").read_text()
