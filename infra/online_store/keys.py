"""Where the online store keeps what, in one Valkey/Redis database.

Feature keys carry a schema version (``railyard:fs:v2:``): a new layout gets a new prefix and
never misreads the old one (v2: the applied events keep their ratings; a store written as v1 is
rebuilt from the batch data by the next ``railyard ingest``, and the v1 keys can be deleted).
Features live in a *namespace*, so a rebuild can fill a fresh one while readers keep using the
current one, then switch the pointer in one step:

    railyard:fs:v2:current                   string: the current namespace's name
    railyard:fs:v2:rebuild-lock              held while a rebuild runs (one at a time)
    railyard:fs:v2:ns:<ns>:u:<userId>        hash: n, sum, pos, gn0..gn19, gp0..gp19
    railyard:fs:v2:ns:<ns>:m:<movieId>       hash: n, sum, pos
    railyard:fs:v2:ns:<ns>:genres            hash: movieId -> its genre indexes, e.g. "0,7"
    railyard:fs:v2:ns:<ns>:a:<userId>        hash: "<movieId>:<timestamp>" -> rating, of every event
                                             applied (the event id split at the user: small hashes
                                             stay compact; the rating tells a second one apart)
    railyard:fs:v2:ns:<ns>:meta              hash: events (applied), last_ts, built_at, candidates
                                             (1: the namespace keeps the candidate data below)
    railyard:fs:v2:ns:<ns>:r:<userId>        set: the movieIds the user has rated (candidates exclude them)
    railyard:fs:v2:ns:<ns>:pop               sorted set: movieId scored by its ratings count (the
                                             ranking service's candidates: the most popular first)

``n`` counts ratings, ``sum`` adds their values, ``pos`` counts positives; per genre ``gnI``
counts the user's ratings of movies of genre I and ``gpI`` the positive ones (GENRES order). A
missing field or hash is zero. Scripts compute these names from the pointer, so the store
needs one server (no cluster).

The event stream and its dead letters are not versioned with the features:

    railyard:events                          stream: userId, movieId, rating, timestamp
    railyard:events:dead                     stream: an entry's fields + reason + entry (its id)
    railyard:events:dead:index               hash: entry id -> reason (each entry dead-lettered once)

The gray release's state, read by every ranking-service replica (``gray_release``):

    railyard:release:v1:<model>:canary-share        string: the share of users the canary serves
    railyard:release:v1:<model>:live:<label>:<v>    hash: requests, errors, scores, score_sum,
                                                    latency_<i> (railyard.gray's buckets)
"""

from __future__ import annotations

from railyard.features import GENRES

PREFIX = "railyard:fs:v2:"
POINTER = PREFIX + "current"
REBUILD_LOCK = PREFIX + "rebuild-lock"
NAMESPACES = PREFIX + "ns:"

STREAM = "railyard:events"
DEAD_LETTERS = STREAM + ":dead"
DEAD_LETTER_INDEX = DEAD_LETTERS + ":index"
ONLINE_GROUP = "online"  # applies events to the features
SINK_GROUP = "sink"  # appends events to the batch data set
GROUPS = (ONLINE_GROUP, SINK_GROUP)

# Hash fields in the order of the model's input vectors (features.USER_WIDTH, MOVIE_WIDTH).
TOTALS_FIELDS = ("n", "sum", "pos")
USER_FIELDS = (
    *TOTALS_FIELDS,
    *(f"gn{i}" for i in range(len(GENRES))),
    *(f"gp{i}" for i in range(len(GENRES))),
)
MOVIE_FIELDS = TOTALS_FIELDS


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
