"""The streaming scorer (``infra.streaming``, ``railyard score-stream``) against a real Valkey and
the local TF-Serving stand-in over gRPC, serving the tiny models (version 1 `stable`, version 2
`canary`): results equal the synchronous path, one result per request id whatever is published
twice, deadlines, dead letters with reasons, the feature store down (degraded), serving down
then back, a promotion while it runs, a fuzzed stream, its metrics and readiness; kill -9 and
two scorers in one group run the real CLI (marked slow)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from infra.online_store import gray_state, keys
from infra.online_store.store import connect_url
from infra.scoring import predict_pairs, score_online
from infra.streaming.http import serve_status
from infra.streaming.requests import ScoreRequest, read_result, request_fields
from infra.streaming.scorer import Scorer, now_ms, publish_requests, replay_requests, stream_state
from infra.tfserving.protocol import CANARY, STABLE
from railyard.configs import ScorerConfig
from railyard.gray_rules import label_for
from tests.support import REPO_ROOT
from tests.support.online_store import movies_frame, railyard, ratings_frame
from tests.support.serving_fixtures import MODEL_NAME, CanaryFails, client_for, model_config

pytest_plugins = ["tests.support.serving_fixtures"]
pytestmark = pytest.mark.timeout(120)

CONFIG = ScorerConfig(
    batch_size=32,
    flush_ms=2,
    claim_idle_s=1.0,
    result_ttl_s=3_600,
    results_maxlen=100_000,
    max_movies=100,
    serving_timeout_s=5,
    labels_ttl_s=0.1,
)


@pytest.fixture(scope="module")
def serving(contract_server):
    """A client of the module's server: version 1 is `stable`, version 2 `canary`."""
    with client_for(contract_server, attempts=1, timeout_s=5) as client:
        yield client


@pytest.fixture
def store(online_store):
    """Features of 100 ratings by 25 users of 45 movies (small: the tiny models' scores stay apart)."""
    online_store.rebuild(ratings_frame(100, users=25, movies=45, seed=11), movies_frame(40))
    return online_store


def scorer_of(store, serving, **options) -> Scorer:
    config = options.pop("config", CONFIG)
    return Scorer(store, serving, MODEL_NAME, config, consumer_name="test", **options)


def requests_of(count: int, *, prefix: str = "r", deadline_ms: int | None = None, seed: int = 1) -> list[ScoreRequest]:
    """Requests by users 1-26 (26 is new to the store) for one to four of movies 1-46."""
    rng = random.Random(seed)
    return [
        ScoreRequest(
            f"{prefix}{i}", rng.randint(1, 26), tuple(rng.sample(range(1, 47), rng.randint(1, 4))), deadline_ms
        )
        for i in range(count)
    ]


def results_by_id(client) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for _, fields in client.xrange(keys.SCORE_RESULTS):
        result = read_result(fields)
        found.setdefault(result["id"], []).append(result)
    return found


def letters(client) -> dict[bytes, str]:
    """Dead letters: request entry id -> reason."""
    return {fields[b"entry"]: fields[b"reason"].decode() for _, fields in client.xrange(keys.SCORE_DEAD_LETTERS)}


def nothing_pending(client) -> bool:
    return stream_state(client)["groups"][keys.SCORER_GROUP] == {"pending": 0, "lag": 0}


def wait_for(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@contextmanager
def running(scorer: Scorer):
    """The scorer's loop on a thread until the block ends."""
    failed: list[BaseException] = []

    def run():
        try:
            scorer.run()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            failed.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        scorer.stop.set()
        thread.join(30)
    assert not failed, failed
    assert not thread.is_alive()


def test_streamed_scores_equal_the_synchronous_path_for_each_users_label(store, serving):
    """Half the users on the canary: each result names the label its user routes to and the
    version that answered, and its scores are score_online's for that version (1e-6)."""
    gray_state.set_canary_share(store.client, MODEL_NAME, 0.5)
    requests = requests_of(200)
    publish_requests(store.client, requests)
    scorer_of(store, serving).run(until_idle=True)

    results = results_by_id(store.client)
    assert sorted(results) == sorted(request.request_id for request in requests)
    assert all(len(found) == 1 for found in results.values())
    for request in requests:
        (result,) = results[request.request_id]
        label = label_for(request.user_id, 0.5)
        assert result["status"] == "ok" and result["degraded"] is False and result["label"] == label
        assert result["version"] == {STABLE: 1, CANARY: 2}[label]
        assert result["movieIds"] == list(request.movie_ids) and result["userId"] == request.user_id
        users = [request.user_id] * len(request.movie_ids)
        expected = score_online(store, serving, MODEL_NAME, users, request.movie_ids, version=result["version"])
        np.testing.assert_allclose(result["scores"], expected, rtol=0, atol=1e-6)
    assert {results[r.request_id][0]["label"] for r in requests} == {STABLE, CANARY}
    assert nothing_pending(store.client) and not letters(store.client)


HOSTILE = {
    "no id": ({"userId": "1", "movieIds": "1"}, "missing_field"),
    "no movies": ({"id": "h", "userId": "1", "movieIds": ""}, "missing_field"),
    "user a word": ({"id": "h", "userId": "one", "movieIds": "1"}, "id_not_integer"),
    "user 5,000 digits": ({"id": "h", "userId": "9" * 5_000, "movieIds": "1"}, "id_out_of_range"),
    "movie negative": ({"id": "h", "userId": "1", "movieIds": "2,-3"}, "id_out_of_range"),
    "101 movies": ({"id": "h", "userId": "1", "movieIds": ",".join(["2"] * 101)}, "too_many_movies"),
    "a megabyte": ({"id": "h", "userId": "1", "movieIds": "1," * 500_000}, "too_many_movies"),
    "deadline a date": ({"id": "h", "userId": "1", "movieIds": "1", "deadline_ms": "2026-12-07"}, "bad_deadline"),
    "not UTF-8": ({"id": "h", "userId": b"\xff\xfe", "movieIds": "1"}, "not_utf8"),
    "bad id": ({"id": "h h", "userId": "1", "movieIds": "1"}, "bad_request_id"),
    "10,000 fields": ({f"f{i}": "x" for i in range(10_000)}, "missing_field"),
}


def test_malformed_requests_are_dead_lettered_with_reasons_and_change_nothing_else(store, serving):
    client = store.client
    good = requests_of(40)
    publish_requests(client, good[:20])
    refused = {client.xadd(keys.SCORE_REQUESTS, fields): reason for fields, reason in HOSTILE.values()}
    publish_requests(client, good[20:])
    scorer = scorer_of(store, serving, config=CONFIG.__class__(**{**CONFIG.__dict__, "batch_size": 100}))
    scorer.run(until_idle=True)  # one batch holds them all: the good ones around them are scored

    assert letters(client) == {entry: reason for entry, reason in refused.items()}
    assert sorted(results_by_id(client)) == sorted(request.request_id for request in good)
    assert nothing_pending(client) and scorer.consumer.dead_letters == len(HOSTILE)
    (letter,) = [
        fields
        for _, fields in client.xrange(keys.SCORE_DEAD_LETTERS)
        if fields[b"reason"] == b"too_many_movies" and b"1,1," in fields.get(b"movieIds", b"")
    ]
    assert len(letter[b"movieIds"]) < 1_100  # the letter keeps the entry's fields cut short


def test_one_result_per_request_id_and_none_past_its_deadline(store, serving):
    """A request published twice, or scored again after its result was written, yields one
    result; one past its deadline gets `deadline_exceeded`, not a late score."""
    client = store.client
    now = now_ms()
    twice = ScoreRequest("twice", 3, (1, 2), None)
    late = ScoreRequest("late", 4, (5,), now - 1)
    in_time = ScoreRequest("in-time", 5, (6,), now + 600_000)
    publish_requests(client, [twice, late, in_time, twice])
    scorer_of(store, serving).run(until_idle=True)
    publish_requests(client, [twice])  # again, after its result was written
    scorer = scorer_of(store, serving)
    scorer.run(until_idle=True)

    results = results_by_id(client)
    assert {request_id: len(found) for request_id, found in results.items()} == {"twice": 1, "late": 1, "in-time": 1}
    assert results["late"][0]["status"] == "deadline_exceeded" and "scores" not in results["late"][0]
    assert results["in-time"][0]["status"] == "ok" and results["twice"][0]["status"] == "ok"
    assert client.ttl(keys.SCORE_DONE + "twice") > 3_000  # the marker expires (result_ttl_s)
    assert nothing_pending(client) and not letters(client)
    assert client.xlen(keys.SCORE_RESULTS) == 3


class Crash(BaseException):
    """The process dying where it stands: nothing in the scorer catches it."""


def test_a_crash_with_the_next_batch_in_flight_acknowledges_neither_and_a_restart_answers_each_once(store, serving):
    """Batches overlap: the next batch is read and scored while one's results are written. A
    scorer that dies writing a batch's results, the next batch scored meanwhile, has acknowledged
    neither; restarted, it answers every request exactly once."""
    client = store.client
    requests = requests_of(40, prefix="f")
    publish_requests(client, requests)
    config = dataclasses.replace(CONFIG, batch_size=8, flush_ms=0)
    first = scorer_of(store, serving, config=config)
    write, batches_written = first._write_results, []

    def dies_writing_the_third_batch(results):
        if len(batches_written) == 2:
            raise Crash
        write(results)
        batches_written.append(len(results))

    first._write_results = dies_writing_the_third_batch
    with pytest.raises(Crash):
        first.run(until_idle=True)
    assert len(results_by_id(client)) == 16  # batches 1 and 2
    assert client.xpending(keys.SCORE_REQUESTS, keys.SCORER_GROUP)["pending"] == 16  # batch 3, and 4 in flight

    scorer_of(store, serving, config=config).run(until_idle=True)
    results = results_by_id(client)
    assert {request_id: len(found) for request_id, found in results.items()} == {r.request_id: 1 for r in requests}
    assert nothing_pending(client) and not letters(client)


@pytest.mark.parametrize("case", ["feature store down", "no features held"])
def test_without_fresh_features_scores_are_ids_only_and_flagged_degraded(case, store, serving):
    features = store
    if case == "feature store down":
        features = connect_url(f"redis://127.0.0.1:{closed_port()}/0")  # nothing listens there
    else:
        store.client.delete(keys.POINTER)  # flushed features: the streams are still there
    requests = requests_of(30)
    publish_requests(store.client, requests)
    scorer_of(store, serving, features=features).run(until_idle=True)

    results = results_by_id(store.client)
    for request in requests:
        (result,) = results[request.request_id]
        assert result["status"] == "ok" and result["degraded"] is True and result["version"] == 1
        users = [request.user_id] * len(request.movie_ids)
        ids_only, _ = predict_pairs(serving, MODEL_NAME, users, request.movie_ids, None, label=STABLE)
        np.testing.assert_allclose(result["scores"], ids_only, rtol=0, atol=1e-6)
    assert nothing_pending(store.client)


def test_serving_down_then_back_loses_nothing_and_late_requests_are_dead_lettered(
    store, model_root, start_server, tmp_path
):
    config_path = tmp_path / "models.config"
    first = start_server(model_config(model_root, {1}, {"stable": 1}), config_path=config_path)
    ports = {"rest_port": first.rest_port, "grpc_port": first.grpc_port}
    client = store.client
    with client_for(first, attempts=1, timeout_s=2) as serving:
        scorer = scorer_of(store, serving)
        with running(scorer):
            publish_requests(client, requests_of(50, prefix="before-"))
            wait_for(lambda: client.xlen(keys.SCORE_RESULTS) == 50, "the first 50 results")
            first.stop()
            publish_requests(client, requests_of(10, prefix="soon-", deadline_ms=now_ms() + 400))
            wait_for(lambda: len(letters(client)) == 10, "the requests whose deadline passed to be dead-lettered")
            publish_requests(client, requests_of(50, prefix="during-"))  # no deadline: they wait
            time.sleep(0.5)
            assert client.xlen(keys.SCORE_RESULTS) == 50  # nothing scored while serving is down
            assert stream_state(client)["groups"][keys.SCORER_GROUP]["pending"] > 0
            start_server(config_path=config_path, **ports)
            wait_for(lambda: client.xlen(keys.SCORE_RESULTS) == 100, "the backlog to drain", timeout_s=60)
            wait_for(lambda: nothing_pending(client), "the acknowledgements")

    results = results_by_id(client)
    assert sorted(results) == sorted([f"before-{i}" for i in range(50)] + [f"during-{i}" for i in range(50)])
    assert all(len(found) == 1 and found[0]["status"] == "ok" for found in results.values())
    assert set(letters(client).values()) == {"serving_unavailable"}
    retries = scorer.metrics.registry.get_sample_value(
        "railyard_scorer_dependency_retries_total", {"dependency": "serving"}
    )
    assert retries >= 1


def test_a_promotion_while_the_scorer_runs_names_the_version_that_scored(store, model_root, start_server):
    """Version 2 is loaded, labelled stable, and version 1 unloaded while requests stream in:
    every result names a version, its scores are that version's, and both versions appear."""
    server = start_server(model_config(model_root, {1}, {"stable": 1}))
    client = store.client
    published = []
    with client_for(server, attempts=1, timeout_s=5) as serving:
        scorer = scorer_of(store, serving)
        with running(scorer):
            for step, config in enumerate(
                [
                    model_config(model_root, {1, 2}, {"stable": 1}),
                    model_config(model_root, {1, 2}, {"stable": 2}),
                    model_config(model_root, {2}, {"stable": 2}),
                ]
            ):
                batch = requests_of(60, prefix=f"s{step}-", seed=step)
                publish_requests(client, batch)
                published += batch
                serving.reload_config(config)
                if step == 0:
                    serving.wait_until_available(MODEL_NAME, 2, timeout_s=60)
            wait_for(lambda: client.xlen(keys.SCORE_RESULTS) == len(published), "every result")
        results = results_by_id(client)
        versions = set()
        for request in published:
            (result,) = results[request.request_id]
            versions.add(result["version"])
            users = [request.user_id] * len(request.movie_ids)
            features = store.read_pairs(users, request.movie_ids)
            if result["version"] == 2:  # version 1 is unloaded by now: check the ones 2 scored
                expected, _ = predict_pairs(serving, MODEL_NAME, users, request.movie_ids, features, version=2)
                np.testing.assert_allclose(result["scores"], expected, rtol=0, atol=1e-6)
    assert versions == {1, 2}
    assert nothing_pending(client) and not letters(client)


def test_a_fuzzed_stream_of_5000_requests_with_hundreds_hostile(store, serving):
    """Each valid request id gets exactly one result (100 are published twice), each hostile
    entry one dead letter with its reason, nothing stays pending."""
    rng = random.Random(35)
    client = store.client
    valid = requests_of(4_600, seed=35)
    entries: list[tuple[dict, str | None]] = [(request_fields(request), None) for request in valid]
    entries += [(request_fields(request), None) for request in rng.sample(valid, 100)]  # published twice
    kinds = sorted(HOSTILE)
    entries += [HOSTILE[kinds[i % len(kinds)]] for i in range(300)]
    rng.shuffle(entries)
    with client.pipeline(transaction=False) as pipe:
        for fields, _ in entries:
            pipe.xadd(keys.SCORE_REQUESTS, fields)
        ids = pipe.execute()
    expected_letters = {entry: reason for entry, (_, reason) in zip(ids, entries) if reason is not None}

    config = CONFIG.__class__(**{**CONFIG.__dict__, "batch_size": 256})
    scorer_of(store, serving, config=config).run(until_idle=True)
    results = results_by_id(client)
    assert sorted(results) == sorted(request.request_id for request in valid)
    assert all(len(found) == 1 and found[0]["status"] == "ok" for found in results.values())
    assert letters(client) == expected_letters and len(expected_letters) == 300
    assert nothing_pending(client)


def test_metrics_health_and_readiness(store, serving):
    publish_requests(store.client, requests_of(20))
    store.client.xadd(keys.SCORE_REQUESTS, {"id": "bad", "userId": "x", "movieIds": "1"})
    scorer = scorer_of(store, serving)
    scorer.run(until_idle=True)
    publish_requests(store.client, requests_of(5, prefix="waiting-"))  # lag 5 in group `scorer`
    scorer.stop.clear()
    status = serve_status(scorer, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{status.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/metrics") as response:
            samples = {
                (sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(response.read().decode())
                for sample in family.samples
            }
        assert samples[("railyard_scorer_results_total", (("status", "ok"),))] == 20
        assert samples[("railyard_scorer_dead_letters_total", (("reason", "id_not_integer"),))] == 1
        assert samples[("railyard_scorer_consumer_lag", (("group", "scorer"),))] == 5
        assert samples[("railyard_scorer_pending", (("group", "scorer"),))] == 0
        assert samples[("railyard_scorer_dead_letters_stream_length", ())] == 1
        assert samples[("railyard_scorer_batch_size_count", ())] >= 1
        assert (
            samples[
                (
                    "railyard_scorer_predict_seconds_count",
                    (("label", STABLE), ("outcome", "ok"), ("signature", "features")),
                )
            ]
            >= 1
        )
        with urllib.request.urlopen(f"{base}/readyz") as response:
            assert json.loads(response.read()) == {"ready": True, "problems": {}}
        with urllib.request.urlopen(f"{base}/healthz") as response:
            assert response.status == 200
        scorer.serving = client_for_nothing()
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz")
        assert not_ready.value.code == 503 and "serving" in json.loads(not_ready.value.read())["problems"]
    finally:
        status.shutdown()


def closed_port() -> int:
    """A port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def client_for_nothing():
    from infra.tfserving.client import ServingClient

    port = closed_port()
    return ServingClient(f"127.0.0.1:{port}", f"http://127.0.0.1:{port}", attempts=1, timeout_s=1)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_scorer_processes_share_a_group_and_a_kill_9_leaves_one_result_per_request(
    store, contract_server, tmp_path
):
    """Two `railyard score-stream` processes in group `scorer`; one is killed (SIGKILL) between
    writing a batch's results and acknowledging them, then started again: every request has
    exactly one result, and the killed batch was redelivered (taken back or claimed)."""
    client = store.client
    env = os.environ | {
        "RAILYARD_SERVING_GRPC": contract_server.grpc_target,
        "RAILYARD_SERVING_REST": contract_server.rest_url,
        "RAILYARD_SCORER_BATCH_SIZE": "20",
        "RAILYARD_SCORER_CLAIM_IDLE_S": "2",
        "RAILYARD_SCORER_METRICS_PORT": "0",
    }

    def scorer(name: str, *fault: str) -> subprocess.Popen:
        command = ["tests.support.faults", *fault] if fault else ["cli"]
        log = open(tmp_path / f"{name}.log", "a")
        return subprocess.Popen(
            [sys.executable, "-m", *command, "score-stream", "--consumer", name.split("-")[0]],
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def consumers() -> set[str]:
        try:
            return {c["name"].decode() for c in client.xinfo_consumers(keys.SCORE_REQUESTS, keys.SCORER_GROUP)}
        except redis.ResponseError:  # no group yet
            return set()

    killed = scorer("a-killed", "infra.online_store.consumer:ValkeyStreams.ack@3")
    other = scorer("b")
    wait_for(lambda: consumers() == {"a", "b"}, "both scorers to read the stream", timeout_s=180)
    requests = requests_of(1_500, seed=9)
    publish_requests(client, requests)
    assert killed.wait(120) == -signal.SIGKILL, (tmp_path / "a-killed.log").read_text()[-3000:]
    restarted = scorer("a-restarted")
    try:
        wait_for(lambda: client.xlen(keys.SCORE_RESULTS) >= len(requests), "every result", timeout_s=180)
        wait_for(lambda: nothing_pending(client), "the acknowledgements", timeout_s=60)
    finally:
        for process in (restarted, other):
            process.send_signal(signal.SIGTERM)
        for process in (restarted, other):
            process.wait(60)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in ("a-killed", "a-restarted", "b")}
    assert restarted.returncode == 0 and other.returncode == 0, logs
    results = results_by_id(client)
    assert sorted(results) == sorted(request.request_id for request in requests)
    assert all(len(found) == 1 for found in results.values()) and client.xlen(keys.SCORE_RESULTS) == len(requests)
    assert "took back" in logs["a-restarted"] or "claimed" in logs["b"], logs
    done = {
        name: int(re.search(r"requests done: ([\d,]+)", logs[name]).group(1).replace(",", ""))
        for name in ("a-restarted", "b")
    }
    assert done["b"] > 0 and sum(done.values()) > 0
    assert not letters(client)


def test_publish_requests_and_results_through_the_cli(store, serving, railyard_home):
    """A file is published whole (a bad line refuses it, nothing published); `results` prints
    what the scorer wrote."""
    good, bad = railyard_home / "requests.jsonl", railyard_home / "bad.jsonl"
    good.write_text(
        '{"id": "cli-1", "userId": 6, "movieIds": [1, 30]}\n{"id": "cli-2", "userId": 7, "movieIds": [2]}\n'
    )
    bad.write_text('{"id": "cli-3", "userId": 6, "movieIds": [1]}\n{"id": "cli-4", "userId": 0, "movieIds": [1]}\n')

    refused = railyard("publish-requests", str(bad))
    assert refused.returncode == 2 and "line 2: id_out_of_range" in refused.stderr and "next:" in refused.stderr
    assert store.client.xlen(keys.SCORE_REQUESTS) == 0
    sent = railyard("publish-requests", str(good), "--timeout-ms", "600000")
    assert sent.stdout.strip() == f"published 2 requests to {keys.SCORE_REQUESTS}", sent.stderr
    scorer_of(store, serving).run(until_idle=True)

    shown = railyard("results", "--last", "5", "--json")
    assert shown.returncode == 0, shown.stderr
    results = [json.loads(line) for line in shown.stdout.splitlines()]
    assert [result["id"] for result in results] == ["cli-1", "cli-2"]
    expected = score_online(store, serving, MODEL_NAME, [6, 6], [1, 30], label=STABLE)
    np.testing.assert_allclose(results[0]["scores"], expected, rtol=0, atol=1e-6)
    text = railyard("results", "--last", "1").stdout
    assert text.startswith("cli-2: user 7 2: ") and "(v1 stable, " in text
    status = railyard("online-store", "status").stdout  # `railyard status` prints the same lines
    assert "streaming scorer: 2 requests (scorer: 0 pending, lag 0), 0 dead letters, 2 results" in status
    again = railyard("replay-requests", "--from", "0", "--to", str(now_ms()), "--suffix", "-b")
    assert again.stdout.strip() == "published 2 requests again", again.stderr
    assert store.client.xlen(keys.SCORE_REQUESTS) == 4


def test_a_replayed_time_range_is_scored_again_under_new_ids(store, serving):
    client = store.client
    for at, request in zip((1_000, 2_000, 3_000, 4_000), requests_of(4, prefix="old-")):
        client.xadd(keys.SCORE_REQUESTS, request_fields(request), id=f"{at}-0")
    scorer_of(store, serving).run(until_idle=True)

    assert replay_requests(client, 2_000, 3_000, "-again") == 2  # both ends included
    scorer_of(store, serving).run(until_idle=True)
    results = results_by_id(client)
    assert sorted(results) == ["old-0", "old-1", "old-1-again", "old-2", "old-2-again", "old-3"]
    assert results["old-1-again"][0]["scores"] == results["old-1"][0]["scores"]
    assert replay_requests(client, 2_000, 3_000, "x" * 128) == 2  # ids too long now: dead-lettered
    scorer_of(store, serving).run(until_idle=True)
    assert sorted(letters(client).values()) == ["bad_request_id", "bad_request_id"]


def test_a_failing_canary_is_answered_by_stable(store, serving):
    gray_state.set_canary_share(store.client, MODEL_NAME, 1.0)
    requests = requests_of(20)
    publish_requests(store.client, requests)
    scorer = scorer_of(store, CanaryFails(serving))
    scorer.run(until_idle=True)

    results = results_by_id(store.client)
    assert {(found[0]["label"], found[0]["version"]) for found in results.values()} == {(STABLE, 1)}
    assert len(results) == 20 and nothing_pending(store.client) and not letters(store.client)
    failed = {"label": CANARY, "signature": "features", "outcome": "error"}
    assert scorer.metrics.registry.get_sample_value("railyard_scorer_predict_seconds_count", failed) >= 1
