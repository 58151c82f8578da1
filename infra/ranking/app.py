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
when it breaks the API's rules (ids: ``contract.request_id``).

The shape of the FastAPI full-stack template: ``create_app`` builds the ``Ranker`` and puts it in
the app's state, the routes (``routes``: two ``APIRouter``s) get it through a dependency
(``deps``), the failures' JSON is ``errors``'; the service's defaults are settings
(``RAILYARD_RANKING_*``, ``Settings.ranking_config()``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi_offline import FastAPIOffline

from infra.online_store.store import OnlineStore
from infra.ranking.errors import HANDLERS
from infra.ranking.metrics import RankingMetrics
from infra.ranking.routes import probes, ranking
from infra.ranking.service import Ranker
from infra.tfserving.client import ServingClient
from infra.tfserving.replicas import ReplicaPool
from railyard.configs import RankingConfig
from railyard.settings import Settings


def create_app(
    store: OnlineStore,
    replicas: Sequence[ServingClient],
    model: str,
    config: RankingConfig | None = None,
    *,
    locate_replicas: Callable[[], Sequence[ServingClient]] | None = None,
    **changes: float,
) -> FastAPI:
    """The service over ``store`` and the TF Serving ``replicas`` (balanced, see
    ``infra.tfserving.replicas``; ``locate_replicas``: where they run now, when they may move) for
    ``model``; each app keeps its own caches and metrics. ``config``: ``Settings.ranking_config()``
    (None: the settings' defaults); ``changes``: fields of it to change (``share_ttl_s=0``)."""
    config = dataclasses.replace(config or Settings.model_construct().ranking_config(), **changes)
    metrics = RankingMetrics()
    for client in replicas:
        metrics.replica_up.labels(client.grpc_target).set(1)
    serving = ReplicaPool(
        replicas,
        on_health=lambda replica, up: metrics.replica_up.labels(replica).set(int(up)),
        locate=locate_replicas,
    )
    # /docs and /redoc with Swagger UI and ReDoc served by the service itself: no CDN needed.
    app = FastAPIOffline(title="Railyard ranking service", lifespan=lifespan)
    app.state.ranker = Ranker(store, serving, model, config, metrics)
    app.include_router(ranking)
    app.include_router(probes)
    for error, handler in HANDLERS.items():
        app.add_exception_handler(error, handler)
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    ranker: Ranker = app.state.ranker
    await run_in_threadpool(ranker.warm_up)
    ranker.live.start()
    yield
    await run_in_threadpool(ranker.live.close)  # the last live figures, before the process ends


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run the app with uvicorn until interrupted (SIGINT/SIGTERM end it gracefully)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
