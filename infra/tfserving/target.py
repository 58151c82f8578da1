"""Where a TF Serving is and what it was last told: the endpoints, the model root both sides
see, and the known-good config kept in that root.

A target may be several replicas of one server (the compose stack's two TF Servings, or several
local servers): they share the model root, and so the one known-good config. ``grpc``/``rest``
are the first replica's; ``replicas`` lists them all, ``clients()`` opens one client for each.

TF Serving has no "get config" RPC: the config file in the model root is the known-good
config; it is rewritten atomically after every successful reload, and it is also the file TF
Serving (``--model_config_file``) and the local server read when they start.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from infra.tfserving.client import ServingClient
from infra.tfserving.model_config import read_config, served_versions
from infra.tfserving.protocol import CONFIG_FILE
from railyard.settings import Settings


@dataclass(frozen=True)
class Replica:
    grpc: str  # host:port
    rest: str  # http://host:port
    reload_token: str | None = field(default=None, repr=False)  # a local server's; a secret


@dataclass(frozen=True)
class ServingTarget:
    grpc: str  # host:port of the gRPC API (ModelService, PredictionService)
    rest: str  # http://host:port
    model_root: Path  # where this process writes version folders
    server_model_root: str  # the same folder as the server sees it (e.g. /models in the container)
    reload_token: str | None = field(default=None, repr=False)  # the local server's; a secret
    other_replicas: tuple[Replica, ...] = ()  # replicas 2..N, on the same model root

    @property
    def replicas(self) -> tuple[Replica, ...]:
        return (Replica(self.grpc, self.rest, self.reload_token), *self.other_replicas)

    @property
    def config_path(self) -> Path:
        return self.model_root / CONFIG_FILE

    def base_path(self, model: str) -> str:
        return posixpath.join(self.server_model_root, model)

    def client(self, **options) -> ServingClient:
        """A client of the first replica."""
        return ServingClient(self.grpc, self.rest, reload_token=self.reload_token, **options)

    @contextmanager
    def clients(self, **options) -> Iterator[list[ServingClient]]:
        """One client per replica, the first replica's first; all closed afterwards."""
        with ExitStack() as stack:
            yield [
                stack.enter_context(ServingClient(r.grpc, r.rest, reload_token=r.reload_token, **options))
                for r in self.replicas
            ]


def known_good_config(target: ServingTarget) -> ModelServerConfig:
    """What the server was last told successfully (nothing yet: an empty config)."""
    return read_config(target.config_path) if target.config_path.exists() else ModelServerConfig()


def serving_labels(target: ServingTarget, model: str) -> dict[str, int]:
    return served_versions(known_good_config(target), model)[1]


def served_version_numbers(target: ServingTarget, model: str) -> set[int]:
    return served_versions(known_good_config(target), model)[0]


def serving_labels_on_file(settings: Settings) -> dict[str, int]:
    """The labels the model root's config gives the model, without asking any server."""
    path = settings.resolved_serving_model_root / CONFIG_FILE
    return served_versions(read_config(path), settings.model_name)[1] if path.exists() else {}
