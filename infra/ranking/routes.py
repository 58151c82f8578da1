"""The ranking service's routes, as two ``APIRouter``s over the app's ``Ranker`` (``deps``):

- ``ranking``: ``GET /v1/recommend`` and ``POST /v1/score``; each answer (or failure, as
  ``errors.failure`` words it) is counted in the metrics and added to the live figures;
- ``probes``: ``/healthz``, ``/readyz`` and ``/metrics``.

Endpoints are plain functions: FastAPI runs them in its thread pool, since the store and gRPC
clients block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from infra.ranking.deps import RankerDep, RequestId, ScoreRequestDep
from infra.ranking.errors import failure
from infra.ranking.service import LiveRecord, Ranker
from railyard.configs import RANKING_MAX_CANDIDATES
from railyard.errors import RailyardError

log = logging.getLogger("railyard.ranking")

MAX_K = 1_000
NO_LABEL = "none"  # the metrics' label when no label answered

ranking = APIRouter(prefix="/v1")
probes = APIRouter()


def finish(
    ranker: Ranker,
    body: dict,
    endpoint: str,
    label: str,
    started: float,
    records: Sequence[LiveRecord],
    status: int = 200,
) -> JSONResponse:
    """The answer, counted in the metrics and added to the live figures with its latency."""
    seconds = time.perf_counter() - started
    ranker.metrics.requests.labels(endpoint, label, str(status)).inc()
    ranker.metrics.request_seconds.labels(endpoint, label).observe(seconds)
    ranker.record_live(records, seconds * 1_000)
    return JSONResponse(body, status_code=status)


def failed(
    ranker: Ranker, error: RailyardError, endpoint: str, started: float, records: Sequence[LiveRecord]
) -> JSONResponse:
    status, body = failure(error)
    log.warning("%s answered %d: %s", endpoint, status, error)
    return finish(ranker, body, endpoint, NO_LABEL, started, records, status)


@ranking.get("/recommend")
def recommend(
    ranker: RankerDep,
    user_id: Annotated[RequestId, Query(alias="userId")],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    candidates: Annotated[int | None, Query(ge=1, le=RANKING_MAX_CANDIDATES)] = None,
) -> JSONResponse:
    started, records = time.perf_counter(), []
    try:
        found = ranker.recommend(user_id, k, candidates, records)
    except RailyardError as error:
        return failed(ranker, error, "recommend", started, records)
    body = {
        "userId": user_id,
        "recommendations": [{"movieId": movie, "score": score} for movie, score in zip(found.movie_ids, found.scores)],
        "model_version": found.version,
        "label": found.label,
        "degraded": False,
    }
    return finish(ranker, body, "recommend", found.label, started, records)


@ranking.post("/score")
def score(ranker: RankerDep, request: ScoreRequestDep) -> JSONResponse:
    started, records = time.perf_counter(), []
    users = [instance.userId for instance in request.instances]
    movies = [instance.movieId for instance in request.instances]
    try:
        scored = ranker.score(users, movies, records)
    except RailyardError as error:
        return failed(ranker, error, "score", started, records)
    if len(scored.groups) == 1:
        (group,) = scored.groups
        label, version = group.label, group.version
    else:  # users on both labels: see "routes"
        label, version = "mixed", None
    body = {
        "predictions": [[value] for value in scored.scores.tolist()],
        "model_version": version,
        "label": label,
        "degraded": scored.degraded,
        "routes": [
            {"label": group.label, "model_version": group.version, "instances": group.rows} for group in scored.groups
        ],
    }
    return finish(ranker, body, "score", label, started, records)


@probes.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@probes.get("/readyz")
def readyz(ranker: RankerDep) -> JSONResponse:
    problems = ranker.readiness()
    body = {"ready": not problems, "not_ready": problems, "replicas_down": ranker.serving.down()}
    return JSONResponse(body, status_code=503 if problems else 200)


@probes.get("/metrics")
def prometheus(ranker: RankerDep) -> Response:
    content, media_type = ranker.metrics.exposition()
    return Response(content, media_type=media_type)
