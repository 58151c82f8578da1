"""The ranking service in front of TF Serving (``railyard rank-server``): candidates and fresh
features from the online store, one gRPC predict per label, routing by user for the gray release,
live figures for the canary's bake, Prometheus metrics. ``app`` builds the HTTP API from
``routes`` (its APIRouters), ``deps`` (their dependencies and request shapes) and ``errors`` (failures
as JSON); ``service`` does the work, ``live`` buffers the live figures, ``metrics`` is the
Prometheus registry."""

from infra.ranking.app import create_app, serve
from infra.ranking.service import Ranker

__all__ = ["Ranker", "create_app", "serve"]
