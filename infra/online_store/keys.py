"""Where the online store keeps what, in one Valkey/Redis database.

Feature keys carry the feature code's version (``railyard:fs:v3-<digest>:``, the digest of the
declarations in ``railyard.feature_spec``): a new layout, a new aggregate declared included, gets
a new prefix and never misreads the old one. A store written under another prefix is rebuilt
from the batch data by the next ``railyard ingest`` (it finds no current namespace under its
own), and the old keys can be deleted (v2 → v3: docs/operations.md).
Features live in a *namespace*, so a rebuild can fill a fresh one while readers keep using the
current one, then switch the pointer in one step (``<prefix>`` is ``railyard:fs:v3-<digest>:``):

    <prefix>current                   string: the current namespace's name
    <prefix>rebuild-lock              held while a rebuild runs (one at a time)
    <prefix>ns:<ns>:u:<userId>        hash: one field per declared user aggregate, and @ts, @id
    <prefix>ns:<ns>:m:<movieId>       hash: one field per declared movie aggregate (and @ts, @id)
    <prefix>ns:<ns>:genres            hash: movieId -> its genre indexes, e.g. "0,7"
    <prefix>ns:<ns>:a:<userId>        hash: "<movieId>:<timestamp>" -> rating, of every event
                                      applied (the event id split at the user: small hashes
                                      stay compact; the rating tells a second one apart)
    <prefix>ns:<ns>:meta              hash: events (applied), last_ts, built_at, candidates
                                      (1: the namespace keeps the candidate data below)
    <prefix>ns:<ns>:r:<userId>        set: the movieIds the user has rated (candidates exclude them)
    <prefix>ns:<ns>:pop               sorted set: movieId scored by its ratings count (the
                                      ranking service's candidates: the most popular first)

An aggregate's field is its name without the entity (``user_rating_sum``: ``rating_sum``), one
per genre for a genre vector (``genre_n.0`` .. ``genre_n.19``, GENRES order); a time is kept as
its epoch seconds. Today's user hash: n, rating_sum, positives, genre_n.I, genre_pos.I,
last_rating, last_ts; the movie's: n, rating_sum, positives. An entity with ``latest``
aggregates also keeps ``@ts`` and ``@id``: the timestamp and the other entity's id of its latest
event, which a new event must exceed to replace the latest values. A missing field or hash is
zero. Scripts compute these names from the pointer, so the store needs one server (no cluster).

The event stream and its dead letters are not versioned with the features:

    railyard:events                          stream: userId, movieId, rating, timestamp
    railyard:events:dead                     stream: an entry's fields + reason + entry (its id)
    railyard:events:dead:index               hash: entry id -> reason (each entry dead-lettered once)

The streaming scorer's streams (``infra.streaming``), not versioned either:

    railyard:scores:requests                 stream: id, userId, movieIds, deadline_ms (group `scorer`)
    railyard:scores:requests:dead            stream: a refused request's fields + reason + detail + entry
    railyard:scores:requests:dead:index      hash: entry id -> reason (each entry dead-lettered once)
    railyard:scores:results                  stream: one result per request id (trimmed to a length)
    railyard:scores:done:<request id>        string, with a TTL: the request id has its result

The gray release's state, read by every ranking-service replica (``gray_state``):

    railyard:release:v1:<model>:canary-share        string: the share of users the canary serves
    railyard:release:v1:<model>:live:<label>:<v>    hash: requests, errors, scores, score_sum,
                                                    latency_<i> (railyard.gray_rules's buckets)
"""

from __future__ import annotations

from railyard.feature_spec import FEATURE_CODE_VERSION, aggregates

PREFIX = f"railyard:fs:v{FEATURE_CODE_VERSION}:"
POINTER = PREFIX + "current"
REBUILD_LOCK = PREFIX + "rebuild-lock"
NAMESPACES = PREFIX + "ns:"

STREAM = "railyard:events"
DEAD_LETTERS = STREAM + ":dead"
DEAD_LETTER_INDEX = DEAD_LETTERS + ":index"
ONLINE_GROUP = "online"  # applies events to the features
SINK_GROUP = "sink"  # appends events to the batch data set
GROUPS = (ONLINE_GROUP, SINK_GROUP)

SCORE_REQUESTS = "railyard:scores:requests"
SCORE_DEAD_LETTERS = SCORE_REQUESTS + ":dead"
SCORE_DEAD_LETTER_INDEX = SCORE_DEAD_LETTERS + ":index"
SCORE_RESULTS = "railyard:scores:results"
SCORE_DONE = "railyard:scores:done:"
SCORER_GROUP = "scorer"

LATEST_TS, LATEST_ID = "@ts", "@id"  # of an entity's latest event (no declared field starts with @)


def fields(entity: str) -> tuple[str, ...]:
    """The hash fields of an entity's declared aggregates, in the model's input order."""
    return tuple(field for aggregate in aggregates(entity) for field in aggregate.fields)


def namespace_prefix(namespace: str) -> str:
    return f"{NAMESPACES}{namespace}:"


def namespace_of(key: str) -> str:
    """The namespace a feature key belongs to."""
    return key[len(NAMESPACES) :].split(":", 1)[0]


def user_key(namespace: str, user_id: int) -> str:
    return f"{namespace_prefix(namespace)}u:{user_id}"


def movie_key(namespace: str, movie_id: int) -> str:
    return f"{namespace_prefix(namespace)}m:{movie_id}"


def genres_key(namespace: str) -> str:
    return namespace_prefix(namespace) + "genres"


def applied_key(namespace: str, user_id: int) -> str:
    return f"{namespace_prefix(namespace)}a:{user_id}"


def meta_key(namespace: str) -> str:
    return namespace_prefix(namespace) + "meta"


def rated_key(namespace: str, user_id: int) -> str:
    return f"{namespace_prefix(namespace)}r:{user_id}"


def popularity_key(namespace: str) -> str:
    return namespace_prefix(namespace) + "pop"


RELEASE = "railyard:release:v1:"


def canary_share_key(model: str) -> str:
    return f"{RELEASE}{model}:canary-share"


def live_key(model: str, label: str, version: int) -> str:
    return f"{RELEASE}{model}:live:{label}:{version}"
