"""The features, declared once: each per-entity aggregate is one ``Aggregate`` below.

From these declarations alone come the offline point-in-time build (``railyard.features``, and so
the partitioned build on Dask), the online store's hash fields, its Lua apply and read scripts
and its rebuild (``infra.online_store``), the skew check, and the model's input layout
(``layout``): a new aggregate is one more line in ``USER_AGGREGATES`` or ``MOVIE_AGGREGATES``.

An aggregate belongs to an entity (``user`` or ``movie``): every rating event counts for its user
and for its movie. What one event contributes is the product of its ``factors``:

- ``one``: 1; ``rating``: the rating (0.5 to 5.0); ``label``: 1 for a positive rating
  (``rating >= POSITIVE_RATING``), else 0; ``timestamp``: the event's time (epoch seconds);
- ``genres``: the flags of the event's movie's genres (a vector of ``len(GENRES)``, in GENRES
  order; a movie missing from the catalogue has none).

Its ``kind`` says how events are put together, both order-free (the stream's order never matters):

- ``sum``: additive, the sum over the events;
- ``latest``: the value of the entity's latest event, the one with the greatest (timestamp, the
  other entity's id): for a user, of two ratings in one second the one of the greater movieId.

Offline, every row sees the aggregates of the events strictly before its own timestamp (ratings
in one second never see each other); online, the store holds them over every event applied. An
entity with no event yet has zeros everywhere (a latest rating of 0, a latest time of 0).

The model's input vector of an entity (float32) puts its aggregates side by side in declaration
order, then the static ``movie_genres`` (the catalogue's genre flags, not an aggregate) last in
the movie's. Counts and sums of half stars are exact in float32 (below 2**24 events); a time is
not (epoch seconds in float32 are 128 s apart), so a ``timestamp`` value takes two slots: its UTC
day (``ts // 86400``) and its second of that day (``ts % 86400``), each exact, and a time
difference of less than 194 days computed from them in float32 is exact too. The store and the
offline columns keep the raw value (an Int64 timestamp).

Nothing heavy is imported here: the online store's key layout, the serving side and the CLI read
these declarations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Bump when the build's rules change what a declared aggregate means (the point-in-time rule, the
# label); a change of the declarations changes the digest in FEATURE_CODE_VERSION by itself.
SCHEMA_VERSION = 3
POSITIVE_RATING = 3.5  # the label: rating >= 3.5
# The genres MovieLens writes in movies.csv (pipe-separated), and its marker for none.
MOVIELENS_GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
NO_GENRES = "(no genres listed)"
GENRES = (*MOVIELENS_GENRES, NO_GENRES)  # the order of every genre vector
ENTITIES = {"user": "userId", "movie": "movieId"}  # entity -> its id column
FACTORS = ("one", "rating", "label", "timestamp", "genres")
KINDS = ("sum", "latest")
MOVIE_GENRES = "movie_genres"  # the static genre flags, last in the movie's layout
DAY_S = 86_400


class DeclarationError(ValueError):
    """A declaration the build, the store or the layout cannot carry."""


@dataclass(frozen=True)
class Aggregate:
    name: str  # "<entity>_...": the offline column; the online hash field is the name without "<entity>_"
    entity: str  # "user" | "movie"
    kind: str  # "sum" | "latest"
    factors: tuple[str, ...]  # what one event contributes: the product of these (FACTORS)

    def __post_init__(self):
        problem = _problem(self)
        if problem:
            raise DeclarationError(f"aggregate {self.name!r}: {problem}")

    @property
    def per_genre(self) -> bool:
        return "genres" in self.factors

    @property
    def is_time(self) -> bool:
        """A time (epoch seconds): Int64 offline, two slots (day, second of day) in the vector."""
        return "timestamp" in self.factors

    @property
    def is_float(self) -> bool:
        """Holds ratings: Float64 totals (a sum of half stars is exact), else integers."""
        return "rating" in self.factors

    @property
    def field(self) -> str:
        """Its hash field in the online store: the name without the entity."""
        return self.name.removeprefix(f"{self.entity}_")

    @property
    def fields(self) -> tuple[str, ...]:
        """Its hash fields, in vector order (a genre vector: ``<field>.<i>`` for each genre)."""
        return tuple(f"{self.field}.{i}" for i in range(len(GENRES))) if self.per_genre else (self.field,)

    @property
    def width(self) -> int:
        """Its slots in the model's input vector."""
        return len(GENRES) if self.per_genre else 2 if self.is_time else 1


def _problem(aggregate: Aggregate) -> str | None:
    if aggregate.entity not in ENTITIES:
        return f"entity must be one of {sorted(ENTITIES)}, not {aggregate.entity!r}"
    if not (aggregate.name.isidentifier() and aggregate.name.startswith(f"{aggregate.entity}_")):
        return f"the name must be an identifier starting with {aggregate.entity + '_'!r}"
    if aggregate.name == MOVIE_GENRES:
        return "movie_genres is the catalogue's static genre flags"
    if aggregate.kind not in KINDS:
        return f"kind must be one of {KINDS}, not {aggregate.kind!r}"
    if not aggregate.factors or not set(aggregate.factors) <= set(FACTORS):
        return f"factors must be a non-empty tuple of {FACTORS}, not {aggregate.factors!r}"
    if aggregate.factors.count("genres") > 1:
        return "'genres' is a vector: it can be a factor once"
    time_ok = aggregate.factors.count("timestamp") == 1 and set(aggregate.factors) <= {"timestamp", "one", "label"}
    if aggregate.is_time and (aggregate.kind != "latest" or not time_ok):
        return "a 'timestamp' value is a time: only the latest one, times nothing but 'one' or 'label'"
    return None


USER_AGGREGATES = (
    Aggregate("user_n", "user", "sum", ("one",)),
    Aggregate("user_rating_sum", "user", "sum", ("rating",)),
    Aggregate("user_positives", "user", "sum", ("label",)),
    Aggregate("user_genre_n", "user", "sum", ("genres",)),
    Aggregate("user_genre_pos", "user", "sum", ("label", "genres")),
    Aggregate("user_last_rating", "user", "latest", ("rating",)),
    Aggregate("user_last_ts", "user", "latest", ("timestamp",)),
)
MOVIE_AGGREGATES = (
    Aggregate("movie_n", "movie", "sum", ("one",)),
    Aggregate("movie_rating_sum", "movie", "sum", ("rating",)),
    Aggregate("movie_positives", "movie", "sum", ("label",)),
)


def aggregates(entity: str) -> tuple[Aggregate, ...]:
    """The entity's declared aggregates, in vector order (read when called: a test may extend them)."""
    declared = {"user": USER_AGGREGATES, "movie": MOVIE_AGGREGATES}[entity]
    names = [aggregate.name for aggregate in (*USER_AGGREGATES, *MOVIE_AGGREGATES)]
    if len(set(names)) != len(names) or any(aggregate.entity != entity for aggregate in declared):
        raise DeclarationError(f"the {entity} aggregates need unique names, each of entity {entity!r}")
    return declared


def other_entity(entity: str) -> str:
    """Whose id breaks ties between an entity's events in one second (``latest``)."""
    return "movie" if entity == "user" else "user"


def names(entity: str) -> tuple[str, ...]:
    """The offline columns of the entity's input vector, in order."""
    return (*(aggregate.name for aggregate in aggregates(entity)), *((MOVIE_GENRES,) if entity == "movie" else ()))


def layout(entity: str) -> dict[str, slice]:
    """Each column's slots in the entity's float32 input vector."""
    slots, start = {}, 0
    for aggregate in aggregates(entity):
        slots[aggregate.name] = slice(start, start + aggregate.width)
        start += aggregate.width
    if entity == "movie":
        slots[MOVIE_GENRES] = slice(start, start + len(GENRES))
    return slots


def width(entity: str) -> int:
    return max((part.stop for part in layout(entity).values()), default=0)


def vector_part(aggregate: Aggregate, raw):
    """An aggregate's slots in the input vector from its raw values (a NumPy array, one row per
    entity, one column per hash field): a time as (UTC day, second of the day), else as is.
    Exact for integers up to 2**53 in float64 and for Int64."""
    if not aggregate.is_time:
        return raw
    import numpy as np

    return np.concatenate([raw // DAY_S, raw % DAY_S], axis=1)


def layout_digest() -> str:
    """A digest of everything declared: it changes whenever a declaration does."""
    declared = (GENRES, POSITIVE_RATING, aggregates("user"), aggregates("movie"))
    return hashlib.sha256(repr(declared).encode()).hexdigest()[:8]


# Part of the data fingerprint, the models' code version, the feature folder's meta.json and the
# online store's key prefix: a folder, a model or a store of other declarations is never misread.
FEATURE_CODE_VERSION = f"{SCHEMA_VERSION}-{layout_digest()}"


def __getattr__(name: str):
    """USER_FEATURES, MOVIE_FEATURES, USER_WIDTH, MOVIE_WIDTH: computed from the declarations
    when read, like ``layout``."""
    derived = {
        "USER_FEATURES": lambda: names("user"),
        "MOVIE_FEATURES": lambda: names("movie"),
        "USER_WIDTH": lambda: width("user"),
        "MOVIE_WIDTH": lambda: width("movie"),
    }
    if name in derived:
        return derived[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
