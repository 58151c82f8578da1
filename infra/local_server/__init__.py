"""A local TF-Serving-compatible server (REST + gRPC) for development and tests.

The server's names are imported on first use: ``background`` (start, find, stop the process)
stays light for the CLI's quick commands.
"""

__all__ = ["LocalServingServer", "StatusError"]


def __getattr__(name: str):
    if name == "LocalServingServer":
        from infra.local_server.server import LocalServingServer

        return LocalServingServer
    if name == "StatusError":
        from infra.local_server.errors import StatusError

        return StatusError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
