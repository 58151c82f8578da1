"""The ranking service's failures as JSON (``{"error": kind, "detail": ...}``), never a traceback:
the status and body of each error Railyard raises, and the app's exception handlers."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from infra.online_store.store import OnlineStoreEmpty, OnlineStoreUnavailable
from infra.ranking.service import NoCandidates
from infra.tfserving.client import ServingError, ServingUnavailableError
from railyard.errors import RailyardError

log = logging.getLogger("railyard.ranking")

MAX_PROBLEMS = 10  # listed in a 422 (a request may break a rule a thousand times)
MAX_MESSAGE = 200  # characters of one problem's message: it may quote a value

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


def failure(error: RailyardError) -> tuple[int, dict]:
    """The HTTP status and JSON body for an error Railyard raised."""
    for kind_of, kind, status, detail in FAILURES:
        if isinstance(error, kind_of):
            return status, {"error": kind, "detail": detail}
    return 500, {"error": "internal", "detail": type(error).__name__}


async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    """A 422 naming what is wrong (at most MAX_PROBLEMS problems), never echoing the request."""
    problems = [
        {
            "loc": [str(part) for part in problem["loc"]],
            "msg": problem["msg"][:MAX_MESSAGE],
            "type": problem["type"],
        }
        for problem in error.errors()[:MAX_PROBLEMS]
    ]
    return JSONResponse({"error": "invalid_request", "detail": problems}, status_code=422)


async def railyard_error(_: Request, error: RailyardError) -> JSONResponse:
    status, body = failure(error)
    return JSONResponse(body, status_code=status)


async def unexpected(request: Request, error: Exception) -> JSONResponse:
    log.error("unexpected error", exc_info=error)
    request.app.state.ranker.metrics.errors.labels("internal").inc()
    body = {"error": "internal", "detail": type(error).__name__}
    return JSONResponse(body, status_code=500)


HANDLERS = {RequestValidationError: invalid_request, RailyardError: railyard_error, Exception: unexpected}
