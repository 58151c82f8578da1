"""The streaming scorer's pure parts: a request's rules and their reasons, results as the
results stream carries them, a requests file, the micro-batcher's flush at N or T, routing."""

from __future__ import annotations

import json

import pytest

from infra.online_store.consumer import Refusal, fill
from infra.streaming.requests import (
    RESULT_FIELDS,
    RequestFileError,
    ScoreRequest,
    Scores,
    parse_request,
    read_request_file,
    read_result,
    request_fields,
    result_fields,
)
from railyard.gray_rules import canary_serves, label_for, routes

GOOD = {"id": "req-1", "userId": "6", "movieIds": "1,30, 7"}

REFUSED = {
    "no id": ({"id": None}, "missing_field"),
    "blank movieIds": ({"movieIds": " "}, "missing_field"),
    "user not an integer": ({"userId": "six"}, "id_not_integer"),
    "user zero": ({"userId": "0"}, "id_out_of_range"),
    "a float movie": ({"movieIds": "1,2.5"}, "id_not_integer"),
    "an empty movie": ({"movieIds": "1,,2"}, "id_not_integer"),
    "5,000 digits": ({"userId": "9" * 5_000}, "id_out_of_range"),
    "2^63": ({"movieIds": str(2**63)}, "id_out_of_range"),
    "101 movies": ({"movieIds": ",".join(["1"] * 101)}, "too_many_movies"),
    "a megabyte of movies": ({"movieIds": "1," * 500_000}, "too_many_movies"),
    "deadline a word": ({"deadline_ms": "soon"}, "bad_deadline"),
    "deadline negative": ({"deadline_ms": "-5"}, "bad_deadline"),
    "deadline 40 digits": ({"deadline_ms": "9" * 40}, "bad_deadline"),
    "id with a space": ({"id": "a b"}, "bad_request_id"),
    "id of 129": ({"id": "x" * 129}, "bad_request_id"),
    "user not UTF-8": ({"userId": b"\xff\xfe6"}, "not_utf8"),
    "id not UTF-8": ({"id": b"r\xc3"}, "not_utf8"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_request_that_breaks_a_rule_is_refused_with_its_reason(case):
    change, reason = REFUSED[case]
    fields = {name: value for name, value in (GOOD | change).items() if value is not None}
    with pytest.raises(Refusal) as refused:
        parse_request({name.encode(): value for name, value in fields.items()}, max_movies=100)
    assert refused.value.reason == reason
    assert len(str(refused.value)) < 200  # a hostile value is never echoed whole


def test_a_good_request_parses_from_bytes_and_round_trips():
    fields = {name.encode(): value.encode() for name, value in (GOOD | {"deadline_ms": "1700000000123"}).items()}
    request = parse_request(fields | {b"extra": b"ignored"}, max_movies=3)
    assert request == ScoreRequest("req-1", 6, (1, 30, 7), 1_700_000_000_123)
    assert parse_request(request_fields(request), max_movies=3) == request
    assert request.expired(1_700_000_000_124) and not request.expired(1_700_000_000_123)
    assert not ScoreRequest("r", 1, (1,), None).expired(2**62)


def test_results_carry_exact_scores_and_name_their_version():
    request = ScoreRequest("r-9", 6, (1, 30), None)
    scored = Scores([0.1234567890123, 1e-9], "canary", 2, False)
    fields = result_fields(request, b"1700000000000-3", scored, 12.5)
    result = read_result({name.encode(): value.encode() for name, value in fields.items()})
    assert result == {
        "id": "r-9",
        "entry": "1700000000000-3",
        "status": "ok",
        "userId": 6,
        "movieIds": [1, 30],
        "latency_ms": 12.5,
        "scores": [0.1234567890123, 1e-9],
        "version": 2,
        "label": "canary",
        "degraded": False,
    }
    late_fields = result_fields(request, b"1-0", None, 80.0)
    late = read_result({k.encode(): v.encode() for k, v in late_fields.items()})
    assert late["status"] == "deadline_exceeded" and "scores" not in late
    # The scorer sends the names once (RESULT_FIELDS) and each result's values in that order.
    assert tuple(fields) == RESULT_FIELDS and tuple(late_fields) == RESULT_FIELDS[: len(late_fields)]


def test_a_requests_file_is_published_whole_or_not_at_all(tmp_path):
    good = tmp_path / "good.jsonl"
    lines = [{"id": "a", "userId": 1, "movieIds": [1, 2]}, {"id": "b", "userId": 2, "movieIds": [3], "deadline_ms": 5}]
    good.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    requests = read_request_file(good, max_movies=10, timeout_ms=1_000, now_ms=100)
    assert requests == [ScoreRequest("a", 1, (1, 2), 1_100), ScoreRequest("b", 2, (3,), 5)]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"id": "c", "userId": "x", "movieIds": [1]}) + "\n")
    with pytest.raises(RequestFileError, match="line 2: id_not_integer"):
        read_request_file(bad, max_movies=10, timeout_ms=None, now_ms=0)
    bad.write_text("{not json\n")
    with pytest.raises(RequestFileError, match="line 1 is not JSON"):
        read_request_file(bad, max_movies=10, timeout_ms=None, now_ms=0)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_micro_batch_flushes_at_n_entries():
    clock, reads = Clock(), []

    def read(count, block_ms):
        reads.append((count, block_ms))
        return [(b"x", {})] * min(count, 3)

    batch = fill([(b"first", {})], read, size=8, flush_ms=50, clock=clock)
    assert len(batch) == 8 and [count for count, _ in reads] == [7, 4, 1]


def test_the_micro_batch_flushes_after_t_milliseconds():
    clock, reads = Clock(), []

    def read(count, block_ms):
        reads.append(block_ms)
        clock.now += 0.02  # each read waits 20 ms and brings one entry
        return [(b"x", {})]

    batch = fill([(b"first", {})], read, size=100, flush_ms=50, clock=clock)
    assert len(batch) == 4 and reads == [50, 30, 10]  # 20, 40, 60 ms: the third one ends it
    assert fill([(b"only", {})], lambda *_: [], size=100, flush_ms=50, clock=clock) == [(b"only", {})]


def test_routing_is_the_ranking_services():
    users = list(range(1, 500))
    assert routes(users, 0.0) == ["stable"] * len(users)
    halves = routes(users, 0.5)
    assert halves == [label_for(user, 0.5) for user in users] and 150 < halves.count("canary") < 350
    assert canary_serves({"stable": 1, "canary": 2})
    assert not canary_serves({"stable": 2, "canary": 2}) and not canary_serves({"stable": 1})
