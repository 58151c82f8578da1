"""The ranking service's HTTP API (FastAPI), in front of TF Serving.

- ``GET /v1/recommend?userId=6&k=10[&candidates=100]``: the user's top k of the most popular
  movies they have not rated, scored with fresh features.
- ``POST /v1/score`` ``{"instances": [{"userId": 6, "movieId": 1}, ...]}``: TF Serving's
  ``predictions`` layout, with fresh features (ids only, flagged ``degraded``, when the online
  store does not answer). The body is JSON whatever type it declares, as TF Serving takes it
  (``curl -d`` declares a form).
- ``/healthz`` (the process answers), ``/readyz`` (a TF Serving replica serves `stable` and the
  online store answers; 503 naming what is not ready; replicas set aside are listed),
  ``/metrics`` (Prometheus text format); ``/docs`` and ``/redoc`` (the API's pages, their
  scripts served here too: they work without internet).

Failures are JSON (``{"error": kind, "detail": ...}``, the full reason in the log), never a traceback: 503
when TF Serving or (for candidates) the online store does not answer, 502 when TF Serving
refuses the request, 422 ``invalid_request`` naming what is wrong, never echoing the request,
when it breaks the API's rules (ids: ``contract.request_id``). Endpoints are plain functions:
FastAPI runs them in its thread pool, since the store and gRPC clients block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo

from infra.online_store.store import OnlineStore, OnlineStoreEmpty, OnlineStoreUnavailable
from infra.ranking.live import FLUSH_S
from infra.ranking.metrics import RankingMetrics
from infra.ranking.service import LABELS_TTL_S, SHARE_TTL_S, LiveRecord, NoCandidates, Ranker
from infra.tfserving.client import ServingClient, ServingError, ServingUnavailableError
from infra.tfserving.replicas import ReplicaPool
from railyard.contract import InvalidId, request_id
from railyard.errors import RailyardError

log = logging.getLogger("railyard.ranking")

MAX_INSTANCES = 1_000  # per /v1/score request
MAX_PROBLEMS = 10  # listed in a 422 (a request may break a rule a thousand times)
MAX_MESSAGE = 200  # characters of one problem's message: it may quote a value
MAX_K = 1_000
MAX_CANDIDATES = 10_000
NO_LABEL = "none"  # the metrics' label when no label answered

# error class -> (kind, HTTP status, what the caller should know); the first match wins.
FAILURES: tuple[tuple[type[Exception], str, int, str], ...] = (
    (ServingUnavailableError, "serving_unavailable", 503, "TF Serving does not answer; try again later"),
    (ServingError, "serving_error", 502, "TF Serving refused the request"),
    (
        OnlineStoreUnavailable,
        "online_store_unavailable",
        503,
        "the online store does not answer: the candidates (movies the user has not rated) are unknown",
    ),
    (OnlineStoreEmpty, "online_store_empty", 503, "the online store holds no features yet"),
    (
        NoCandidates,
        "no_candidates",
        503,
        "the online store keeps no candidate data yet: rebuild it (`railyard ingest --rebuild`)",
    ),
)


def _request_id(value: int, info: ValidationInfo) -> int:
    try:
        # A query parameter's validator is told no name: userId is the only one.
        return request_id(info.field_name or "userId", value)
    except InvalidId as bad:
        raise ValueError(str(bad)) from None


RequestId = Annotated[int, AfterValidator(_request_id)]


class Instance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    userId: RequestId  # noqa: N815 - the request's field names are TF Serving's
    movieId: RequestId  # noqa: N815


class ScoreRequest(BaseModel):
    instances: list[Instance] = Field(min_length=1, max_length=MAX_INSTANCES)


async def score_request(request: Request) -> ScoreRequest:
    """The body read as JSON whatever type it declares, as TF Serving reads it."""
    try:
        return ScoreRequest.model_validate_json(await request.body())
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False)
        raise RequestValidationError([problem | {"loc": ("body", *problem["loc"])} for problem in problems]) from None


def create_app(
    store: OnlineStore,
    replicas: Sequence[ServingClient],
    model: str,
    *,
    candidates: int = 100,
    share_ttl_s: float = SHARE_TTL_S,
    labels_ttl_s: float = LABELS_TTL_S,
    live_flush_s: float = FLUSH_S,
    locate_replicas: Callable[[], Sequence[ServingClient]] | None = None,
) -> FastAPI:
    """The service over ``store`` and the TF Serving ``replicas`` (balanced, see
    ``infra.tfserving.replicas``; ``locate_replicas``: where they run now, when they may move) for
    ``model``; each app keeps its own caches and metrics."""
    metrics = RankingMetrics()
    for client in replicas:
        metrics.replica_up.labels(client.grpc_target).set(1)
    serving = ReplicaPool(
        replicas,
        on_health=lambda replica, up: metrics.replica_up.labels(replica).set(int(up)),
        locate=locate_replicas,
    )
    ranker = Ranker(
        store,
        serving,
        model,
        candidates=candidates,
        metrics=metrics,
        share_ttl_s=share_ttl_s,
        labels_ttl_s=labels_ttl_s,
        live_flush_s=live_flush_s,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await run_in_threadpool(ranker.warm_up)
        ranker.live.start()
        yield
        await run_in_threadpool(ranker.live.close)  # the last live figures, before the process ends

    # /docs and /redoc with Swagger UI and ReDoc served by the service itself: no CDN needed.
    app = FastAPIOffline(title="Railyard ranking service", lifespan=lifespan)
    app.state.ranker = ranker

    def finish(
        body: dict,
        endpoint: str,
        label: str,
        started: float,
        records: Sequence[LiveRecord],
        status: int = 200,
    ) -> JSONResponse:
        seconds = time.perf_counter() - started
        metrics.requests.labels(endpoint, label, str(status)).inc()
        metrics.request_seconds.labels(endpoint, label).observe(seconds)
        ranker.record_live(records, seconds * 1_000)
        return JSONResponse(body, status_code=status)

    def failed(error: RailyardError, endpoint: str, started: float, records: Sequence[LiveRecord]) -> JSONResponse:
        status, body = failure(error)
        log.warning("%s answered %d: %s", endpoint, status, error)
        return finish(body, endpoint, NO_LABEL, started, records, status)

    @app.get("/v1/recommend")
    def recommend(
        user_id: Annotated[RequestId, Query(alias="userId")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        candidates: Annotated[int | None, Query(ge=1, le=MAX_CANDIDATES)] = None,
    ) -> JSONResponse:
        started, records = time.perf_counter(), []
        try:
            found = ranker.recommend(user_id, k, candidates, records)
        except RailyardError as error:
            return failed(error, "recommend", started, records)
        body = {
            "userId": user_id,
            "recommendations": [
                {"movieId": movie, "score": score} for movie, score in zip(found.movie_ids, found.scores)
            ],
            "model_version": found.version,
            "label": found.label,
            "degraded": False,
        }
        return finish(body, "recommend", found.label, started, records)

    @app.post("/v1/score")
    def score(request: Annotated[ScoreRequest, Depends(score_request)]) -> JSONResponse:
        started, records = time.perf_counter(), []
        users = [instance.userId for instance in request.instances]
        movies = [instance.movieId for instance in request.instances]
        try:
            scored = ranker.score(users, movies, records)
        except RailyardError as error:
            return failed(error, "score", started, records)
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
                {"label": group.label, "model_version": group.version, "instances": group.rows}
                for group in scored.groups
            ],
        }
        return finish(body, "score", label, started, records)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        problems = ranker.readiness()
        body = {"ready": not problems, "not_ready": problems, "replicas_down": serving.down()}
        return JSONResponse(body, status_code=503 if problems else 200)

    @app.get("/metrics")
    def prometheus() -> Response:
        content, media_type = metrics.exposition()
        return Response(content, media_type=media_type)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {
                "loc": [str(part) for part in problem["loc"]],
                "msg": problem["msg"][:MAX_MESSAGE],
                "type": problem["type"],
            }
            for problem in error.errors()[:MAX_PROBLEMS]
        ]
        return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)

    @app.exception_handler(RailyardError)
    async def railyard_error(_: Request, error: RailyardError) -> JSONResponse:
        status, body = failure(error)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=error)
        metrics.errors.labels("internal").inc()
        body = {"error": "internal", "detail": type(error).__name__}
        return JSONResponse(body, status_code=500)

    return app


def failure(error: RailyardError) -> tuple[int, dict]:
    """The HTTP status and JSON body for an error Railyard raised."""
    for kind_of, kind, status, detail in FAILURES:
        if isinstance(error, kind_of):
            return status, {"error": kind, "detail": detail}
    return 500, {"error": "internal", "detail": type(error).__name__}


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted (SIGINT/SIGTERM end it gracefully)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
