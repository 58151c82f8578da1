"""A local TF-Serving-compatible server (REST + gRPC) for development and tests."""

from infra.local_server.errors import StatusError
from infra.local_server.server import LocalServingServer

__all__ = ["LocalServingServer", "StatusError"]
