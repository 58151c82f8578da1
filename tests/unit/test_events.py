import pytest

from railyard.errors import Refused
from railyard.events import MalformedEvent, RatingEvent, parse_event

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
