"""The ranking service in front of TF Serving (``railyard rank-server``): candidates and fresh
features from the online store, one gRPC predict per label, routing by user for the gray release,
live figures for the canary's bake, Prometheus metrics. ``app`` holds the HTTP API, ``service``
the work, ``metrics`` the Prometheus registry."""

from infra.ranking.app import create_app, serve
from infra.ranking.service import Ranker

__all__ = ["Ranker", "create_app", "serve"]
