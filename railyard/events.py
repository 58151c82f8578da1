"""Rating events and the rules a rating must meet: one rule set for the event stream
(``publish-events``, the ingester) and the batch data (the loaders and validation), so that what
the stream accepts, the daily retrain accepts.

An event is one rating: ``userId``, ``movieId``, ``rating``, ``timestamp`` (seconds since 1970),
carried as text fields (a stream entry's fields are bytes). A user rates a movie at most once
per timestamp, so (user, movie, timestamp) is the event's natural key, its ``event_id``: an
event published twice is the same event, and the online store counts it once.

The rules:

- ids are integers from 1 to 2^63-1 (at most 19 digits, checked before any conversion);
- a rating is a half step from 0.5 to 5.0;
- a timestamp is an integer from 0 up to the time the event is judged at (for a stream entry,
  the time the stream took it) plus ``MAX_CLOCK_SKEW_S``: producers' clocks differ a little, a
  rating dated further ahead is a bug, and it would be refused by every later retrain;
- first wins: a second rating of the same event with another value is refused (dead-lettered
  on the stream, dropped and counted by the loaders); the first one, in stream order, counts.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from railyard.errors import Refused

if TYPE_CHECKING:
    import polars as pl

FIELDS = ("userId", "movieId", "rating", "timestamp")
KEY = ("userId", "movieId", "timestamp")  # an event's natural key
MIN_ID, MAX_ID = 1, 2**63 - 1  # ids and timestamps are Int64 in the data set
MIN_RATING, MAX_RATING = 0.5, 5.0
RATING_VALUES = [step / 2 for step in range(1, 11)]  # 0.5, 1.0, ..., 5.0
MIN_TIMESTAMP = 0
MAX_CLOCK_SKEW_S = 300  # how far ahead of the judging clock a timestamp may be
_MAX_DIGITS = len(str(MAX_ID))  # 19: a longer integer is out of every range here
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_SHOWN = 40  # characters of a refused value a message quotes


class MalformedEvent(Refused):
    """An event that breaks a rule; ``reason`` names the rule (the dead-letter stream records it)."""

    next_step = "fix the producer of the event; the ingester dead-letters it and keeps going"

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


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


def max_timestamp(now: float) -> int:
    """The newest timestamp a rating judged at ``now`` may carry."""
    return int(now) + MAX_CLOCK_SKEW_S


def parse_event(fields: Mapping[bytes | str, bytes | str | None], now: float | None = None) -> RatingEvent:
    """The event in a stream entry's fields (other fields are ignored), judged at ``now``
    (default: the current time), or ``MalformedEvent``."""
    text = {_text(key): _text(value) for key, value in fields.items() if value is not None}
    missing = [name for name in FIELDS if not text.get(name, "").strip()]
    if missing:
        raise MalformedEvent("missing_field", f"no {', '.join(missing)} (an event has {', '.join(FIELDS)})")
    user_id, movie_id = (parse_id(name, text[name]) for name in ("userId", "movieId"))
    latest = max_timestamp(time.time() if now is None else now)
    return RatingEvent(user_id, movie_id, _rating(text["rating"]), _timestamp(text["timestamp"], latest))


@dataclass(frozen=True, eq=False)
class FirstWins:
    ratings: pl.DataFrame  # one row per event: its first
    repeats: int  # rows dropped that repeat an earlier row in every column
    conflicts: int  # rows dropped that rate an earlier row's event with another value


def first_wins(ratings: pl.DataFrame) -> FirstWins:
    """``ratings`` (in stream order: the order of the stream's entries, else of the files and
    their rows) with the first row of each event only."""
    import polars as pl  # not at the top: the serving client reads the id rule without Polars

    if all_distinct(ratings):
        return FirstWins(ratings, 0, 0)
    kept = ratings.filter(pl.struct(KEY).is_first_distinct())
    repeats = ratings.height - ratings.n_unique()
    return FirstWins(kept, repeats, ratings.height - kept.height - repeats)


def all_distinct(ratings: pl.DataFrame) -> bool:
    """Whether every row is another event, by a hash of each row's event: the usual case, found
    10x faster than the rows that repeat one (distinct hashes are distinct events; a collision
    only sends the caller down the exact way)."""
    import polars as pl

    return ratings.select(pl.struct(KEY).hash().n_unique()).item() == ratings.height


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _short(value: str) -> str:
    """A value as a message shows it: cut short when long (a hostile one may be megabytes)."""
    return value if len(value) <= _SHOWN else f"{value[:_SHOWN]}… ({len(value):,} characters)"


def _integer(name: str, value: str, kind: str) -> int:
    """``value`` as an integer; never converts more digits than an int64 has."""
    if not _INTEGER.fullmatch(value):
        raise MalformedEvent(f"{kind}_not_integer", f"{name} {_short(value)!r} is not an integer")
    if len(value.lstrip("-")) > _MAX_DIGITS:
        raise MalformedEvent(f"{kind}_out_of_range", f"{name} {_short(value)} has more than {_MAX_DIGITS} digits")
    return int(value)


def parse_id(name: str, value: str) -> int:
    """``value`` (text) as the id ``name`` (userId, movieId), or ``MalformedEvent``."""
    if value.isascii() and value.isdigit() and len(value) < _MAX_DIGITS:  # the usual id: no regex
        number = int(value)
    else:
        number = _integer(name, value, "id")
    if not MIN_ID <= number <= MAX_ID:
        raise MalformedEvent("id_out_of_range", f"{name} {number} must be from {MIN_ID} to 2^63-1")
    return number


def _rating(value: str) -> float:
    if not _NUMBER.fullmatch(value):  # float() would also take 'nan', 'inf' and '1_0'
        raise MalformedEvent("rating_not_number", f"rating {_short(value)!r} is not a number")
    rating = float(value)
    if not MIN_RATING <= rating <= MAX_RATING:
        raise MalformedEvent("rating_out_of_range", f"rating {_short(value)} must be from {MIN_RATING} to {MAX_RATING}")
    if not (rating * 2).is_integer():
        raise MalformedEvent("rating_not_half_step", f"rating {_short(value)} must be a multiple of 0.5")
    return rating


def _timestamp(value: str, latest: int) -> int:
    number = _integer("timestamp", value, "timestamp")
    if number < MIN_TIMESTAMP:
        raise MalformedEvent("timestamp_out_of_range", f"timestamp {number} must be from {MIN_TIMESTAMP} (1970)")
    if number > latest:
        raise MalformedEvent(
            "timestamp_in_future",
            f"timestamp {number} is more than {MAX_CLOCK_SKEW_S} s after its time of arrival "
            f"{latest - MAX_CLOCK_SKEW_S} (clocks may differ by that much, no more)",
        )
    return number
