"""The ingester against a fuzzed stream (issue 32): more than 10,000 entries, a few hundred of
them hostile, one SIGKILL of the real `railyard ingest` in the middle; then every valid event
counts once, every hostile entry is dead-lettered with its reason, nothing is pending, and the
next `railyard run` on the data set the sink wrote validates it and releases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

from infra.online_store import keys
from railyard.events import RatingEvent
from railyard.loaders import RATINGS_SCHEMA, load_dataset
from railyard.synthetic import generate_movielens
from tests.support.online_store import assert_store_matches, railyard, write_batch_data

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1_500)]
BATCH = 500  # events per batch: the kill lands in the middle of the stream
YEAR_S = 365 * 86_400


def _set(name: str, value):
    return lambda fields: {**fields, name.encode(): value if isinstance(value, bytes) else str(value).encode()}


def _drop(name: str):
    return lambda fields: {key: value for key, value in fields.items() if key != name.encode()}


def _rename(name: str, to: bytes):
    return lambda fields: {(to if key == name.encode() else key): value for key, value in fields.items()}


# A mutation of a valid event's fields, and the reason the ingester must dead-letter it for.
HOSTILE = [
    (_set("userId", "9" * 5_000), "id_out_of_range"),  # Python's int() refuses more than 4,300 digits
    (_set("movieId", 2**63), "id_out_of_range"),
    (_set("movieId", 2**64 + 7), "id_out_of_range"),
    (_set("userId", 0), "id_out_of_range"),
    (_set("movieId", -12), "id_out_of_range"),
    (_set("userId", "1" * 300_000), "id_out_of_range"),
    (_set("userId", "7.0"), "id_not_integer"),
    (_set("movieId", "1e3"), "id_not_integer"),
    (_set("userId", " 7"), "id_not_integer"),
    (_set("userId", "٣"), "id_not_integer"),  # an Arabic-Indic digit: int() would take it
    (_set("movieId", "0x1F"), "id_not_integer"),
    (_set("userId", "[1, 2]"), "id_not_integer"),
    (_set("movieId", "x" * 200_000), "id_not_integer"),
    (_set("userId", b"\xff\xfe\xfd"), "id_not_integer"),  # not UTF-8
    (_set("timestamp", 2**63 - 1), "timestamp_in_future"),  # datetime.fromtimestamp raises OSError on it
    (_set("timestamp", 10**11), "timestamp_in_future"),
    (lambda fields: _set("timestamp", int(time.time()) + YEAR_S)(fields), "timestamp_in_future"),
    (_set("timestamp", -1), "timestamp_out_of_range"),
    (_set("timestamp", "9" * 5_000), "timestamp_out_of_range"),
    (_set("timestamp", "1767225600.5"), "timestamp_not_integer"),
    (_set("timestamp", "2026-01-01T00:00:00Z"), "timestamp_not_integer"),
    (_set("rating", "nan"), "rating_not_number"),
    (_set("rating", "inf"), "rating_not_number"),
    (_set("rating", "true"), "rating_not_number"),
    (_set("rating", " 4.0"), "rating_not_number"),
    (_set("rating", "4.7"), "rating_not_half_step"),
    (_set("rating", 0), "rating_out_of_range"),
    (_set("rating", "1e400"), "rating_out_of_range"),
    (_set("rating", "4" + "0" * 5_000), "rating_out_of_range"),
    (_drop("rating"), "missing_field"),
    (_drop("userId"), "missing_field"),
    (_set("movieId", ""), "missing_field"),
    (_rename("timestamp", b"time\xffstamp"), "missing_field"),
    (lambda fields: _drop("rating")(fields) | {f"f{i}".encode(): b"x" for i in range(10_000)}, "missing_field"),
]


def test_the_ingester_survives_a_fuzzed_stream(online_store, railyard_home, tmp_path):
    rng = np.random.default_rng(32)
    generated = tmp_path / "generated"
    generate_movielens(generated, users=250, movies=300, days=6, ratings_per_day=2_000, seed=32, fmt="parquet")
    ratings = pl.read_parquet(generated / "ratings" / "**" / "*.parquet").cast(RATINGS_SCHEMA).sort("timestamp")
    movies = pl.read_csv(generated / "movies.csv")
    data = railyard_home / "data" / "default"  # the sink's data set, where the retrain reads
    batch, streamed = ratings.head(2_000), ratings.slice(2_000)  # day one is in the data set already
    write_batch_data(data, batch, movies)

    valid = [RatingEvent(*row) for row in streamed.iter_rows()]
    entries: list[tuple[dict[bytes, bytes], str | None]] = [
        ({key.encode(): value.encode() for key, value in event.fields().items()}, None) for event in valid
    ]
    for position in sorted(rng.choice(len(entries), 200, replace=False), reverse=True):  # published twice: valid
        entries.insert(int(position) + 1 + int(rng.integers(0, 50)), entries[position])
    for _ in range(300):
        position = int(rng.integers(1, len(entries)))
        template = valid[int(rng.integers(0, len(valid)))]
        fields = {key.encode(): value.encode() for key, value in template.fields().items()}
        if rng.random() < 0.1:  # a second, different rating of an event published before it
            earlier, reason = entries[int(rng.integers(0, position))]
            if reason is None:
                other = 5.5 - float(earlier[b"rating"])  # another half step, never the same one
                entries.insert(position, ({**earlier, b"rating": repr(other).encode()}, "conflicting_duplicate"))
                continue
        mutate, reason = HOSTILE[int(rng.integers(0, len(HOSTILE)))]
        entries.insert(position, (mutate(fields), reason))
    hostile = sum(reason is not None for _, reason in entries)
    assert len(entries) >= 10_000 and 250 <= hostile <= 400

    client = online_store.client
    pipe = client.pipeline(transaction=False)
    for fields, _ in entries:
        pipe.xadd(keys.STREAM, fields)
    ids = pipe.execute()
    expected_letters = {entry_id: reason for entry_id, (_, reason) in zip(ids, entries) if reason is not None}

    small = {"RAILYARD_INGEST_BATCH_SIZE": str(BATCH)}
    ingest = ("ingest", "--until-idle", "--consumer", "fuzz")
    # Online and sink take turns: the 19th acknowledgement is the online group's 10th batch, applied
    # but never acknowledged; the sink has written 9 batches.
    killed = railyard(*ingest, env=small, faults_at="infra.online_store.stream:acknowledge@19")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3_000:]
    assert client.xpending(keys.STREAM, keys.ONLINE_GROUP)["pending"] == BATCH
    done = railyard(*ingest, env=small)
    assert done.returncode == 0, done.stderr[-3_000:]

    first = pl.DataFrame([(e.user_id, e.movie_id, e.rating, e.timestamp) for e in valid], RATINGS_SCHEMA, orient="row")
    assert_store_matches(online_store, pl.concat([batch, first]), movies)  # each valid event once
    state = online_store.state()
    assert state["events_applied"] == ratings.height
    assert state["groups"] == {"online": {"pending": 0, "lag": 0}, "sink": {"pending": 0, "lag": 0}}
    letters = {fields[b"entry"]: fields for _, fields in client.xrange(keys.DEAD_LETTERS)}
    assert {entry: letter[b"reason"].decode() for entry, letter in letters.items()} == expected_letters
    assert state["dead_letters"] == hostile  # each once, though its batch was redelivered
    for entry, letter in letters.items():  # odd bytes kept as they were, huge values cut short
        assert all(len(value) <= 1_100 for value in letter.values()) and len(letter) <= 40, entry
    odd = [letter for letter in letters.values() if letter.get(b"userId") == b"\xff\xfe\xfd"]
    assert odd and all(letter[b"reason"] == b"id_not_integer" for letter in odd)

    dataset = load_dataset(data)
    assert sorted(dataset.ratings.rows()) == sorted(ratings.rows())  # the sink wrote what the store holds
    # The sink wrote the second ratings too; the loader drops them as the online store refused them.
    assert dataset.conflicts_dropped == list(expected_letters.values()).count("conflicting_duplicate") > 0
    _assert_the_next_run_releases(railyard_home, data, tmp_path)


def _assert_the_next_run_releases(home, data, tmp_path) -> None:
    """The real `railyard run` on the sink's data set: validation passes, the online store shows no
    skew against it, and (the model is not the subject: any passes the gate) a version is released."""
    env = os.environ | {
        "RAILYARD_EPOCHS": "1",
        "RAILYARD_MIN_AUC": "0",
        "RAILYARD_MIN_AUC_LIFT": "-1",
        "RAILYARD_MAX_LOGLOSS": "10",
        "RAILYARD_LOCAL_SERVING_REST_PORT": "0",
        "RAILYARD_LOCAL_SERVING_GRPC_PORT": "0",
    }
    env.pop("PREFECT_HOME")  # the CLI sets up its own Prefect world under RAILYARD_HOME
    command = [sys.executable, "-m", "cli"]
    try:
        run = subprocess.run(
            [*command, "run", "--data", str(data), "--epochs", "1", "--auto-approve", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=1_200,
            cwd=tmp_path,
        )
    finally:
        subprocess.run([*command, "serve", "--stop"], env=env, capture_output=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3_000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["stage"] == "production" and summary["model_version"] == 1
    assert (home / "reports").is_dir()
