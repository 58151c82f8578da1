"""The streaming scorer (``railyard score-stream``): requests from a stream, scored in
micro-batches through TF Serving's gRPC Predict, one result per request id in a results stream.

One user of the generic consumer (``infra.online_store.consumer``): group ``scorer`` on
``railyard:scores:requests``, pending first, a stopped scorer's requests claimed after
``claim_idle_s``, acknowledged only once their results are written. Per micro-batch:

- **Parse** each request (``requests.parse_request``); one that breaks a rule is dead-lettered
  with its reason.
- **Deadlines**: a request past its ``deadline_ms`` gets a ``deadline_exceeded`` result, not a
  late score (checked before scoring and again when its result is written).
- **Route** each user as the ranking service does (``railyard.gray_rules.routes``, the canary's share
  from the online store, only while a canary other than stable's version is served; both read
  again every ``labels_ttl_s`` on a thread of their own); a canary call that fails is answered
  by ``stable``.
- **Score** with ``infra.scoring``: fresh features for every pair in one store read, one gRPC
  Predict per label. When the online store does not answer, ids only, flagged ``degraded``.
  Results name the version TF Serving answered with (the response's ``model_spec``), so a
  promotion mid-stream never mislabels a score.
- **Exactly once in effect**: the batch's results and a marker per request id (kept
  ``result_ttl_s``) are written in one Lua step; a request id with a marker gets no second
  result, so a redelivery after a crash between that write and the acknowledgement, or a
  request published twice, yields one result.
- **Serving down** (or not serving the model yet): the batch is retried with capped backoff
  and its requests stay pending; a request whose deadline passes meanwhile is dead-lettered
  (``serving_unavailable``). A Predict refused as invalid sends the batch one request at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import redis

from infra.online_store import gray_state, keys
from infra.online_store.consumer import Consumer, Parsed, ValkeyStreams, Work, entry_time
from infra.online_store.store import OnlineStore, OnlineStoreUnavailable, reachable
from infra.scoring import Features, fresh_features, predict_routed
from infra.streaming.metrics import ScorerMetrics
from infra.streaming.requests import (
    RESULT_FIELDS,
    ScoreRequest,
    Scores,
    parse_request,
    request_fields,
    result_fields,
)
from infra.tfserving.client import ServingClient, ServingError
from infra.tfserving.protocol import CANARY, STABLE
from infra.tfserving.replicas import ReplicaPool
from railyard.configs import ScorerConfig
from railyard.errors import RailyardError
from railyard.gray_rules import canary_serves, routes
from railyard.refreshed import Refreshed

log = logging.getLogger("railyard.streaming")

PUBLISH_CHUNK = 1_000  # XADDs per round trip

# KEYS: results stream; ARGV: marker prefix, marker TTL (s), the stream's approximate length, the
# number of field names m, the m names (``RESULT_FIELDS``), then per result: request id, n, the
# values of its first n fields. A result is written only with its request id's marker, in the same
# atomic step; the reply says which were (1) or had one (0). (Names once: fewer arguments to send.)
WRITE_RESULTS = """
local written = {}
local m = tonumber(ARGV[4])
local i = 5 + m
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if redis.call('SET', ARGV[1] .. ARGV[i], '1', 'NX', 'EX', ARGV[2]) then
    local fields = {}
    for j = 1, n do
      fields[2 * j - 1] = ARGV[4 + j]
      fields[2 * j] = ARGV[i + 1 + j]
    end
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
    written[#written + 1] = 1
  else
    written[#written + 1] = 0
  end
  i = i + 2 + n
end
return written
"""


class ServingDown(RailyardError):
    """TF Serving cannot score now: it does not answer, or does not serve the model's label."""

    next_step = "start serving (`railyard serve --background`); the requests wait in the stream"


def requests_transport(client: redis.Redis) -> ValkeyStreams:
    return ValkeyStreams(client, keys.SCORE_REQUESTS, keys.SCORE_DEAD_LETTERS, keys.SCORE_DEAD_LETTER_INDEX)


def publish_requests(client: redis.Redis, requests: Iterable[ScoreRequest]) -> int:
    """Append the requests to the requests stream; how many."""
    published = 0
    with reachable(client):
        pipe = client.pipeline(transaction=False)
        for published, request in enumerate(requests, start=1):
            pipe.xadd(keys.SCORE_REQUESTS, request_fields(request))
            if published % PUBLISH_CHUNK == 0:
                pipe.execute()
        pipe.execute()
    return published


def replay_requests(client: redis.Redis, start_ms: int, end_ms: int, suffix: str) -> int:
    """Publish again the requests that arrived from ``start_ms`` to ``end_ms`` (Unix ms, both
    included), each id with ``suffix`` (a new id: the old ones keep their results); how many.
    An id made too long by the suffix is dead-lettered as any bad id is."""
    published = 0
    with reachable(client):
        last = f"{start_ms}-0"
        while entries := client.xrange(
            keys.SCORE_REQUESTS, last, f"{end_ms}-18446744073709551615", count=PUBLISH_CHUNK
        ):
            pipe = client.pipeline(transaction=False)
            for _, fields in entries:
                pipe.xadd(keys.SCORE_REQUESTS, {**fields, b"id": fields.get(b"id", b"") + suffix.encode()})
            pipe.execute()
            published += len(entries)
            last = "(" + entries[-1][0].decode()  # exclusive: after the last one read
    return published


def stream_state(client: redis.Redis) -> dict:
    """The requests stream's length, each group's pending and lag, the dead letters and results."""
    with reachable(client):
        groups = {}
        if client.exists(keys.SCORE_REQUESTS):
            for group in client.xinfo_groups(keys.SCORE_REQUESTS):
                name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                groups[name] = {"pending": group["pending"], "lag": group.get("lag")}
        return {
            "length": client.xlen(keys.SCORE_REQUESTS),
            "groups": groups,
            "dead_letters": client.xlen(keys.SCORE_DEAD_LETTERS),
            "results": client.xlen(keys.SCORE_RESULTS),
        }


def last_results(client: redis.Redis, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The newest ``count`` results, oldest first."""
    with reachable(client):
        return list(reversed(client.xrevrange(keys.SCORE_RESULTS, count=count)))


@dataclass
class Scorer:
    store: OnlineStore
    serving: ReplicaPool | ServingClient  # a pool balances over TF Serving's replicas
    model: str
    config: ScorerConfig
    consumer_name: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    metrics: ScorerMetrics | None = None
    features: OnlineStore | None = None  # where features are read (default: ``store``, which holds the streams)

    def __post_init__(self) -> None:
        client = self.store.client
        self.features = self.features or self.store
        self.metrics = self.metrics or ScorerMetrics(lambda: stream_state(client))
        self.consumer = Consumer(
            requests_transport(client),
            {keys.SCORER_GROUP: Work(self._parse, self._score, self._start)},
            name=self.consumer_name,
            batch_size=self.config.batch_size,
            claim_idle_s=self.config.claim_idle_s,
            flush_ms=self.config.flush_ms,
            stop=self.stop,
            unavailable=(ServingDown,),
            # Not the request's fault: waited for, or raised (never dead-lettered).
            not_the_entry=(OnlineStoreUnavailable, ServingDown, OSError),
            on_dead_letter=lambda reason: self.metrics.dead_letters.labels(reason).inc(),
        )
        self._write = client.register_script(WRITE_RESULTS)
        ttl = self.config.labels_ttl_s
        not_read = (RailyardError, ValueError, redis.RedisError)
        self._labels = Refreshed(self._read_labels, ttl, {}, self._not_refreshed("serving labels"), not_read)
        self._share = Refreshed(self._read_share, ttl, 0.0, self._not_refreshed("canary share"), not_read)

    def run(self, until_idle: bool = False) -> None:
        """Score until ``stop`` is set or, with ``until_idle``, until no request is new or pending."""
        done = threading.Event()
        self._labels.get(), self._share.get()  # the first batch routes by what is served now
        refresher = threading.Thread(target=self._refresh_routing, args=(done,), name="scorer-routing", daemon=True)
        refresher.start()
        # One thread scores a started batch (features, Predict) while the consumer's thread
        # reads the next one and writes the last one's results.
        self._scoring = ThreadPoolExecutor(1, thread_name_prefix="scorer-predict")
        try:
            self.consumer.start()
            self.consumer.run(until_idle)
        finally:
            done.set()
            refresher.join()
            self._scoring.shutdown(wait=True)

    def _refresh_routing(self, done: threading.Event) -> None:
        """Read the served labels and the canary's share again twice per TTL on a thread of its
        own, so a batch never waits for those reads (TF Serving's REST answers slowly under load)."""
        while True:
            self._labels.get()
            self._share.get()
            if done.wait(self.config.labels_ttl_s / 2) or self.stop.is_set():
                return

    def warm_up(self) -> None:
        """Import TensorFlow (the gRPC request encoding needs it), so the first batch does not
        pay for it."""
        import tensorflow  # noqa: F401 - seconds of import, paid before the first request

    def readiness(self) -> dict[str, str]:
        """What is not ready, and why (empty: ready)."""
        problems = {}
        try:
            if self.serving.label_version(self.model, STABLE) is None:
                problems["serving"] = f"TF Serving serves no `{STABLE}` version of {self.model!r}"
        except ServingError as error:
            problems["serving"] = str(error)
        try:
            with reachable(self.store.client):
                self.store.client.ping()
        except OnlineStoreUnavailable as error:
            problems["online_store"] = str(error)
        return problems

    # -- one micro-batch -------------------------------------------------------------------

    def _parse(self, entry_id: bytes, fields) -> ScoreRequest:
        return parse_request(fields, self.config.max_movies)

    def _start(self, group: str, parsed: list[Parsed]) -> Callable[[], None]:
        """Read the batch's features and Predict on the scoring thread (while the consumer reads
        the next batch and writes the one before); what writes its results once they came. A
        failure there (serving down included) is the consumer's to do again with ``_score``."""
        now = now_ms()
        due = [item for item in parsed if not item[2].expired(now)]
        answers = self._scoring.submit(self._predict, [request for _, _, request in due])

        def finish() -> None:
            scored = {entry_id: answer for (entry_id, _, _), answer in zip(due, answers.result(), strict=True)}
            self._write_answers(parsed, scored, now)

        return finish

    def _score(self, group: str, parsed: list[Parsed]) -> None:
        now = now_ms()
        due = [item for item in parsed if not item[2].expired(now)]
        scored = self._answers(group, due) if due else {}
        self._write_answers(parsed, scored, now)

    def _write_answers(self, parsed: list[Parsed], scored: dict[bytes, Scores], now: int) -> None:
        """Each request's result: its scores, or "deadline exceeded" when its deadline passed
        before ``now`` (the batch's start) or before the results are written."""
        self.metrics.batch_size.observe(len(parsed))
        written_at = now_ms()
        results = []
        for entry_id, _, request in parsed:
            answer = scored.get(entry_id)
            if entry_id in scored and request.expired(written_at):
                answer = None  # scored too late: the caller gets "deadline exceeded", not a late score
            elif entry_id not in scored and not request.expired(now):
                continue  # dead-lettered while serving was down
            latency_ms = written_at - entry_time(entry_id) * 1000
            results.append((request, result_fields(request, entry_id, answer, latency_ms), latency_ms))
        self.consumer.retrying(lambda: self._write_results(results))

    def _answers(self, group: str, due: list[Parsed]) -> dict[bytes, Scores]:
        """Scores for each request, retried while serving is down; a request whose deadline
        passes meanwhile is dead-lettered and left out."""
        waiting = list(due)

        def give_up_late(error: Exception) -> None:
            self.metrics.retries.labels("serving" if isinstance(error, ServingDown) else "online_store").inc()
            now = now_ms()
            for item in [item for item in waiting if item[2].expired(now)]:
                detail = f"its deadline passed while TF Serving could not score it: {error}"
                self.consumer.refuse(group, item[0], item[1], "serving_unavailable", detail)
                waiting.remove(item)

        answers = self.consumer.retrying(lambda: self._predict([request for _, _, request in waiting]), give_up_late)
        return {entry_id: answer for (entry_id, _, _), answer in zip(waiting, answers, strict=True)}

    def _predict(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """Each request's scores: fresh features for every pair in one read (else ids only,
        degraded), one Predict per label."""
        if not requests:
            return []
        labels = self._labels.get()
        routed = routes([request.user_id for request in requests], self._share.get() if canary_serves(labels) else 0.0)
        counts = np.array([len(request.movie_ids) for request in requests])
        users = np.repeat([request.user_id for request in requests], counts).astype(np.int64)
        movies = np.fromiter((movie for request in requests for movie in request.movie_ids), np.int64, counts.sum())
        starts = np.concatenate([[0], np.cumsum(counts)])
        with self.metrics.online_store_seconds.labels("read_pairs").time():
            features = fresh_features(self.features, users, movies)
        answers: list[Scores | None] = [None] * len(requests)
        for label in (STABLE, CANARY):
            picked = [place for place, routed_to in enumerate(routed) if routed_to == label]
            if not picked:
                continue
            rows = np.concatenate([np.arange(starts[place], starts[place + 1]) for place in picked])
            subset = (features[0][rows], features[1][rows]) if features is not None else None
            scores, answered_by, version = self._ask(label, users[rows], movies[rows], subset)
            offset = 0
            for place in picked:
                count = counts[place]
                answers[place] = Scores(
                    scores[offset : offset + count].tolist(), answered_by, version, features is None
                )
                offset += count
        return answers

    def _ask(
        self, routed: str, users: np.ndarray, movies: np.ndarray, features: Features | None
    ) -> tuple[np.ndarray, str, int | None]:
        """One Predict on the routed label (``infra.scoring.predict_routed``: a failed canary call
        is answered by stable); serving that cannot answer is ``ServingDown``."""

        def observe(label: str, signature: str, ok: bool, seconds: float) -> None:
            self.metrics.predict_seconds.labels(label, signature, "ok" if ok else "error").observe(seconds)

        def failed(label: str, error: ServingError) -> None:
            if label == CANARY:
                log.warning("the canary failed (%s); scoring with stable", error)

        try:
            return predict_routed(
                self.serving, self.model, routed, users, movies, features, observe=observe, failed=failed
            )
        except ServingError as error:
            if error.code == "INVALID_ARGUMENT":
                raise  # about the requests in hand: the consumer tries them one at a time
            raise ServingDown(f"TF Serving cannot score now: {error}") from error

    def _write_results(self, results: list[tuple[ScoreRequest, dict[str, str], float]]) -> None:
        if not results:
            return
        args: list[str | int] = [keys.SCORE_DONE, self.config.result_ttl_s, self.config.results_maxlen]
        args += [len(RESULT_FIELDS), *RESULT_FIELDS]
        for request, fields, _ in results:  # the fields are RESULT_FIELDS' first ones, in order
            args += [request.request_id, len(fields), *fields.values()]
        with reachable(self.store.client), self.metrics.online_store_seconds.labels("write_results").time():
            written = self._write(keys=[keys.SCORE_RESULTS], args=args)
        for (_, fields, latency_ms), new in zip(results, written, strict=True):
            if not new:
                self.metrics.duplicates.inc()
                continue
            self.metrics.results.labels(fields["status"]).inc()
            self.metrics.latency_seconds.observe(latency_ms / 1000)
            if fields.get("degraded") == "1":
                self.metrics.degraded.inc()

    # -- routing ---------------------------------------------------------------------------

    def _read_labels(self) -> dict[str, int]:
        versions = {label: self.serving.label_version(self.model, label) for label in (STABLE, CANARY)}
        return {label: version for label, version in versions.items() if version is not None}

    def _read_share(self) -> float:
        return gray_state.canary_share(self.store.client, self.model)

    def _not_refreshed(self, what: str):
        def warn(error: Exception) -> None:
            log.warning("%s not refreshed (keeping the last value): %s", what, error)

        return warn


def now_ms() -> int:
    return time.time_ns() // 1_000_000
