"""The ranking service's work, without HTTP: route a user to a label, read candidates and fresh
features from the online store, ask TF Serving, fall back, and keep the live figures.

- **Routing**: ``railyard.gray_rules.routes`` (``label_for(userId, share)``), the share read from the online store
  at most every ``config.share_ttl_s`` (so a change reaches every replica within that), and only
  while TF Serving serves a ``canary`` label (the labels are read at most every
  ``config.labels_ttl_s``).
- **Canary fallback**: a canary call that fails is counted against the canary (its live error
  rate is what the bake watches), then the same request goes to ``stable``.
- **Degraded**: when the online store does not answer, scores come from the ids-only
  ``serving_default`` signature (the features frozen at the model's cut-off), flagged degraded;
  candidates cannot be known, so a recommendation fails (``OnlineStoreUnavailable``).
- **Live figures**: every answer (and every failed call) becomes a ``LiveRecord``; the caller
  adds them with ``record_live`` once the answer is ready, and ``live`` (``infra.ranking.live``)
  writes them to the store in batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import redis
from prometheus_client import Histogram

from infra.online_store import gray_state
from infra.online_store.store import OnlineStore, OnlineStoreEmpty, OnlineStoreUnavailable
from infra.ranking.live import LiveBuffer
from infra.ranking.metrics import RankingMetrics
from infra.scoring import Features, predict_routed
from infra.tfserving.client import ServingError, ServingUnavailableError
from infra.tfserving.protocol import CANARY, STABLE
from infra.tfserving.replicas import ReplicaPool
from railyard.configs import RankingConfig
from railyard.errors import RailyardError
from railyard.gray_rules import canary_serves, routes
from railyard.refreshed import Refreshed

log = logging.getLogger("railyard.ranking")


class NoCandidates(RailyardError):
    """The online store's namespace keeps no candidate data (built before the store kept it)."""

    next_step = "rebuild the online store (`railyard ingest --rebuild`): the new namespace keeps candidate data"


@dataclass(frozen=True)
class LiveRecord:
    """One label's part in one request, for the live figures."""

    label: str
    version: int | None  # None: the label's version is unknown (nothing can be recorded)
    error: bool
    score: float | None  # the mean score of the answer


@dataclass(frozen=True)
class Answered:
    """Scores for some rows, and who gave them."""

    scores: np.ndarray
    label: str  # the label that answered (stable after a canary fallback)
    version: int | None  # the version that answered (TF Serving's response says)


@dataclass(frozen=True)
class Group:
    label: str
    version: int | None
    rows: list[int]


@dataclass(frozen=True)
class Scored:
    scores: np.ndarray  # one per instance, in request order
    groups: list[Group]  # who answered which instances
    degraded: bool


@dataclass(frozen=True)
class Recommended:
    movie_ids: list[int]
    scores: list[float]
    label: str
    version: int | None
    candidates: int  # how many candidates were scored


@dataclass
class Ranker:
    store: OnlineStore
    serving: ReplicaPool
    model: str
    config: RankingConfig
    metrics: RankingMetrics = field(default_factory=RankingMetrics)

    def __post_init__(self) -> None:
        self.live = LiveBuffer(self._write_live, flush_s=self.config.live_flush_s, on_error=self._live_not_written)
        errors = (RailyardError, redis.RedisError, ValueError)
        self._share = Refreshed(self._read_share, self.config.share_ttl_s, 0.0, self._error("canary_share"), errors)
        self._labels = Refreshed(self._read_labels, self.config.labels_ttl_s, {}, self._error("serving_labels"), errors)

    # -- routing ---------------------------------------------------------------------------

    def served_labels(self) -> dict[str, int]:
        """Label -> version for the labels TF Serving serves (as last read)."""
        return self._labels.get()

    def canary_share(self) -> float:
        return self._share.get()

    def routes(self, user_ids: Sequence[int]) -> list[str]:
        """Each user's label: the canary's share of users only while a canary other than stable's
        version is served (after a promotion both labels name one version)."""
        labels = self.served_labels()
        return routes(user_ids, self.canary_share() if canary_serves(labels) else 0.0)

    def _read_share(self) -> float:
        with timed(self.metrics.online_store_seconds, "canary_share"):
            share = gray_state.canary_share(self.store.client, self.model)
        self.metrics.canary_share.set(share)
        return share

    def _read_labels(self) -> dict[str, int]:
        versions = {label: self.serving.label_version(self.model, label) for label in (STABLE, CANARY)}
        return {label: version for label, version in versions.items() if version is not None}

    # -- answers ---------------------------------------------------------------------------

    def score(self, user_ids: Sequence[int], movie_ids: Sequence[int], records: list[LiveRecord]) -> Scored:
        """One score per (user, movie), each user's instances from its label: fresh features from
        the online store (one read for all), else ids only (degraded). One predict per label."""
        users = np.asarray(user_ids, np.int64)
        movies = np.asarray(movie_ids, np.int64)
        routes = self.routes(users.tolist())
        try:
            with timed(self.metrics.online_store_seconds, "read_pairs"):
                features = self.store.read_pairs(users, movies)
        except (OnlineStoreUnavailable, OnlineStoreEmpty) as error:
            self._count_store_error(error)
            self.metrics.degraded.labels("score").inc()
            features = None
        scores = np.zeros(len(users), np.float64)
        groups: dict[tuple[str, int | None], list[int]] = {}  # (label, version) that answered -> rows
        for routed in (STABLE, CANARY):
            rows = [row for row, label in enumerate(routes) if label == routed]
            if not rows:
                continue
            fresh = (features[0][rows], features[1][rows]) if features is not None else None
            answered = self._ask(routed, users[rows], movies[rows], fresh, records)
            scores[rows] = answered.scores
            groups.setdefault((answered.label, answered.version), []).extend(rows)  # a fallback joins stable's
            records.append(LiveRecord(answered.label, answered.version, False, float(answered.scores.mean())))
        answered_by = [Group(label, version, sorted(rows)) for (label, version), rows in groups.items()]
        return Scored(scores, answered_by, features is None)

    def recommend(self, user_id: int, k: int, candidates: int | None, records: list[LiveRecord]) -> Recommended:
        """The user's top ``k`` of the ``candidates`` most popular movies they have not rated,
        scored with fresh features (candidates and features: one store round trip)."""
        (routed,) = self.routes([user_id])
        try:
            with timed(self.metrics.online_store_seconds, "candidates"):
                found = self.store.read_candidates(user_id, candidates or self.config.candidates)
        except (OnlineStoreUnavailable, OnlineStoreEmpty) as error:
            self._count_store_error(error)
            raise
        if not found.kept:
            self.metrics.errors.labels("no_candidates").inc()
            raise NoCandidates("the online store's namespace was built without candidate data")
        if not len(found.movie_ids):  # no ratings yet, or the user has rated every movie rated
            return Recommended([], [], routed, self.served_labels().get(routed), 0)
        user_ids = np.full(len(found.movie_ids), user_id, np.int64)
        answered = self._ask(routed, user_ids, found.movie_ids, (found.users, found.movies), records)
        best = np.lexsort((found.movie_ids, -answered.scores))[:k]  # score descending, then movieId
        top_ids, top_scores = found.movie_ids[best].tolist(), answered.scores[best].tolist()
        records.append(LiveRecord(answered.label, answered.version, False, float(np.mean(top_scores))))
        return Recommended(top_ids, top_scores, answered.label, answered.version, len(found.movie_ids))

    def _ask(
        self, routed: str, users: np.ndarray, movies: np.ndarray, features: Features | None, records: list[LiveRecord]
    ) -> Answered:
        """One predict on the routed label (``infra.scoring.predict_routed``, on the next healthy
        replica); a failed call is counted and recorded, and a failed canary's request answered
        by stable."""

        def observe(label: str, signature: str, ok: bool, seconds: float) -> None:
            self.metrics.tfserving_seconds.labels(label, signature, "ok" if ok else "error").observe(seconds)

        def failed(label: str, error: ServingError) -> None:
            unavailable = isinstance(error, ServingUnavailableError)
            self.metrics.errors.labels("tfserving_unavailable" if unavailable else "tfserving_error").inc()
            records.append(LiveRecord(label, self.served_labels().get(label), True, None))
            if label == CANARY:
                self.metrics.errors.labels("canary_fallback").inc()
                log.warning("the canary failed (%s); answering from stable", error)

        scores, label, version = predict_routed(
            self.serving, self.model, routed, users, movies, features, observe=observe, failed=failed
        )
        return Answered(scores, label, version)

    # -- live figures and readiness --------------------------------------------------------

    def record_live(self, records: Sequence[LiveRecord], latency_ms: float) -> None:
        """Add the request to each label's live figures (written to the store every ``config.live_flush_s``)."""
        for item in records:
            if item.version is not None:
                self.live.add(item.label, item.version, latency_ms, item.error, item.score)

    def _write_live(self, counts) -> None:
        with timed(self.metrics.online_store_seconds, "record"):
            gray_state.add_live(self.store.client, self.model, counts)

    def readiness(self) -> dict[str, str]:
        """What is not ready, and why (empty: ready)."""
        problems = {}
        try:
            if self.serving.label_version(self.model, STABLE) is None:
                problems["serving"] = f"TF Serving answers but serves no `{STABLE}` version of {self.model!r}"
        except ServingError as error:
            problems["serving"] = str(error)
        try:
            if self.store.namespace() is None:
                problems["online_store"] = "the online store holds no features yet (`railyard ingest --rebuild`)"
        except (OnlineStoreUnavailable, redis.RedisError) as error:
            problems["online_store"] = str(error)
        return problems

    def warm_up(self) -> None:
        """Import TensorFlow (the gRPC request encoding needs it) and read the labels, so the first
        request does not pay for them."""
        import tensorflow  # noqa: F401 - seconds of import, paid before the port opens

        self.served_labels()

    # -- helpers ---------------------------------------------------------------------------

    def _count_store_error(self, error: Exception) -> None:
        kind = "online_store_empty" if isinstance(error, OnlineStoreEmpty) else "online_store_unavailable"
        self.metrics.errors.labels(kind).inc()
        log.warning("online store: %s", error)

    def _live_not_written(self, error: Exception) -> None:
        self.metrics.errors.labels("live_record").inc()
        log.warning("live figures not written (kept for the next write): %s", error)

    def _error(self, kind: str) -> Callable[[Exception], None]:
        def count(error: Exception) -> None:
            self.metrics.errors.labels(kind).inc()
            log.warning("%s not refreshed (keeping the last value): %s", kind, error)

        return count


@contextmanager
def timed(histogram: Histogram, operation: str) -> Iterator[None]:
    """Observe the block's seconds in ``histogram`` under (operation, ok|error)."""
    started, outcome = time.perf_counter(), "error"
    try:
        yield
        outcome = "ok"
    finally:
        histogram.labels(operation, outcome).observe(time.perf_counter() - started)
