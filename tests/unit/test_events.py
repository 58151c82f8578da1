import polars as pl
import pytest

from railyard.errors import Refused
from railyard.events import MAX_CLOCK_SKEW_S, MalformedEvent, RatingEvent, first_wins, parse_event
from railyard.loaders import RATINGS_SCHEMA

GOOD = {"userId": "7", "movieId": "42", "rating": "4.5", "timestamp": "1767225600"}


def test_an_event_parses_from_bytes_or_text_and_its_id_is_its_natural_key():
    as_bytes = {key.encode(): value.encode() for key, value in GOOD.items()} | {b"source": b"app"}
    event = parse_event(as_bytes)
    assert event == parse_event(GOOD) == RatingEvent(7, 42, 4.5, 1_767_225_600)
    assert event.event_id == "7:42:1767225600"
    assert parse_event(event.fields()) == event  # what publish writes reads back the same


@pytest.mark.parametrize("rating", ["0.5", "5", "5.0", "3.0", "1e0", ".5"])
def test_every_half_step_from_half_to_five_is_a_rating(rating):
    assert parse_event(GOOD | {"rating": rating}).rating == float(rating)


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"userId": None}, "missing_field", "no userId"),
        ({"timestamp": ""}, "missing_field", "no timestamp"),
        ({"userId": "7.0"}, "id_not_integer", "userId '7.0' is not an integer"),
        ({"movieId": "abc"}, "id_not_integer", "movieId 'abc' is not an integer"),
        ({"movieId": "1_000"}, "id_not_integer", "movieId '1_000'"),
        ({"userId": "0"}, "id_out_of_range", "userId 0 must be from 1"),
        ({"movieId": "-3"}, "id_out_of_range", "movieId -3 must be from 1"),
        ({"userId": str(2**63)}, "id_out_of_range", "must be from 1 to 2^63-1"),
        ({"rating": "good"}, "rating_not_number", "rating 'good' is not a number"),
        ({"rating": "nan"}, "rating_not_number", "rating 'nan'"),
        ({"rating": "inf"}, "rating_not_number", "rating 'inf'"),
        ({"rating": "0"}, "rating_out_of_range", "rating 0 must be from 0.5 to 5.0"),
        ({"rating": "5.5"}, "rating_out_of_range", "rating 5.5"),
        ({"rating": "-1"}, "rating_out_of_range", "rating -1"),
        ({"rating": "4.7"}, "rating_not_half_step", "rating 4.7 must be a multiple of 0.5"),
        ({"rating": "3.25"}, "rating_not_half_step", "rating 3.25"),
        ({"timestamp": "1767225600.5"}, "timestamp_not_integer", "timestamp '1767225600.5' is not an integer"),
        ({"timestamp": "2026-01-01"}, "timestamp_not_integer", "timestamp '2026-01-01'"),
        ({"timestamp": "-1"}, "timestamp_out_of_range", "timestamp -1 must be from 0"),
    ],
)
def test_each_broken_rule_is_named(change, reason, detail):
    fields = {key: value for key, value in (GOOD | change).items() if value is not None}
    with pytest.raises(MalformedEvent) as refused:
        parse_event(fields)
    assert refused.value.reason == reason
    assert detail in str(refused.value)
    assert isinstance(refused.value, Refused) and refused.value.exit_code == 2


def test_a_missing_field_names_every_field_missing():
    with pytest.raises(MalformedEvent, match="no movieId, rating"):
        parse_event({"userId": "1", "timestamp": "5"})


NOW = 1_780_000_000  # the time the event is judged at (an entry's time in the stream)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"movieId": "9" * 5_000}, "id_out_of_range"),  # int() would raise Python's digit-limit ValueError
        ({"userId": "1" + "0" * 19}, "id_out_of_range"),
        ({"timestamp": "9" * 5_000}, "timestamp_out_of_range"),
        ({"timestamp": str(2**63 - 1)}, "timestamp_in_future"),  # datetime.fromtimestamp raises OSError on it
        ({"timestamp": str(10**11)}, "timestamp_in_future"),
        ({"timestamp": str(NOW + 365 * 86_400)}, "timestamp_in_future"),
        ({"rating": "4" + "0" * 5_000}, "rating_out_of_range"),
    ],
)
def test_extreme_values_are_refused_with_a_reason_never_an_exception_of_their_own(change, reason):
    with pytest.raises(MalformedEvent) as refused:
        parse_event(GOOD | change, now=NOW)
    assert refused.value.reason == reason
    assert len(str(refused.value)) < 300  # a huge value is not copied into the message (or the log)


def test_a_timestamp_up_to_the_stated_clock_skew_ahead_is_accepted():
    assert parse_event(GOOD | {"timestamp": str(NOW + MAX_CLOCK_SKEW_S)}, now=NOW).timestamp == NOW + MAX_CLOCK_SKEW_S
    with pytest.raises(MalformedEvent, match=f"more than {MAX_CLOCK_SKEW_S} s"):
        parse_event(GOOD | {"timestamp": str(NOW + MAX_CLOCK_SKEW_S + 1)}, now=NOW)
    assert 60 <= MAX_CLOCK_SKEW_S <= 900  # a few minutes: clocks differ, a date a day ahead is a bug


def test_bytes_that_are_not_utf8_are_a_named_rule_not_a_crash():
    with pytest.raises(MalformedEvent) as refused:
        parse_event({b"userId": b"\xff\xfe7", b"movieId": b"4", b"rating": b"4.0", b"timestamp": b"1"}, now=NOW)
    assert refused.value.reason == "id_not_integer"


def test_first_wins_keeps_the_first_rating_of_each_event_and_counts_what_it_dropped():
    rows = [(1, 10, 4.0, 100), (2, 10, 3.5, 101), (1, 10, 1.0, 100), (2, 10, 3.5, 101), (1, 10, 4.0, 100)]
    kept = first_wins(pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row"))
    assert kept.ratings.rows() == [(1, 10, 4.0, 100), (2, 10, 3.5, 101)]
    assert (kept.repeats, kept.conflicts) == (2, 1)


def test_first_wins_keeps_every_row_when_no_event_repeats():
    rows = [(1, 10, 4.0, 100), (1, 10, 4.0, 101), (1, 11, 4.0, 100), (2, 10, 4.0, 100)]  # each differs in one key
    kept = first_wins(pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row"))
    assert kept.ratings.rows() == rows and (kept.repeats, kept.conflicts) == (0, 0)
