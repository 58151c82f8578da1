"""Rating events as the event stream carries them, and the rules an event must meet.

An event is one rating: ``userId``, ``movieId``, ``rating``, ``timestamp`` (seconds since 1970),
carried as text fields (a stream entry's fields are bytes). A user rates a movie at most once
per timestamp, so (user, movie, timestamp) is the event's natural key, its ``event_id``: an
event published twice is the same event, and the online store counts it once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from railyard.errors import Refused

FIELDS = ("userId", "movieId", "rating", "timestamp")
MIN_RATING, MAX_RATING = 0.5, 5.0
_INT64_MAX = 2**63 - 1  # ids and timestamps are Int64 in the data set
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")


class MalformedEvent(Refused):
    """An event that breaks a rule; ``reason`` names the rule (the dead-letter stream records it)."""

    next_step = "fix the producer of the event; the ingester dead-letters it and keeps going"

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class RatingEvent:
    user_id: int
    movie_id: int
    rating: float
    timestamp: int

    @property
    def event_id(self) -> str:
        return f"{self.user_id}:{self.movie_id}:{self.timestamp}"

    def fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "userId": str(self.user_id),
            "movieId": str(self.movie_id),
            "rating": repr(self.rating),
            "timestamp": str(self.timestamp),
        }


def parse_event(fields: Mapping[bytes | str, bytes | str | None]) -> RatingEvent:
    """The event in a stream entry's fields (other fields are ignored), or ``MalformedEvent``."""
    text = {_text(key): _text(value) for key, value in fields.items() if value is not None}
    missing = [name for name in FIELDS if not text.get(name, "").strip()]
    if missing:
        raise MalformedEvent("missing_field", f"no {', '.join(missing)} (an event has {', '.join(FIELDS)})")
    user_id, movie_id = (_id(name, text[name]) for name in ("userId", "movieId"))
    return RatingEvent(user_id, movie_id, _rating(text["rating"]), _timestamp(text["timestamp"]))


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _id(name: str, value: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise MalformedEvent("id_not_integer", f"{name} {value!r} is not an integer")
    number = int(value)
    if not 0 < number <= _INT64_MAX:
        raise MalformedEvent("id_out_of_range", f"{name} {number} must be from 1 to 2^63-1")
    return number


def _rating(value: str) -> float:
    if not _NUMBER.fullmatch(value):  # float() would also take 'nan', 'inf' and '1_0'
        raise MalformedEvent("rating_not_number", f"rating {value!r} is not a number")
    rating = float(value)
    if not MIN_RATING <= rating <= MAX_RATING:
        raise MalformedEvent("rating_out_of_range", f"rating {value} must be from {MIN_RATING} to {MAX_RATING}")
    if not (rating * 2).is_integer():
        raise MalformedEvent("rating_not_half_step", f"rating {value} must be a multiple of 0.5")
    return rating


def _timestamp(value: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise MalformedEvent("timestamp_not_integer", f"timestamp {value!r} is not an integer (seconds since 1970)")
    number = int(value)
    if not 0 <= number <= _INT64_MAX:
        raise MalformedEvent("timestamp_out_of_range", f"timestamp {number} must be from 0 to 2^63-1")
    return number
