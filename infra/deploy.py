"""Ship a published store version to TF Serving: materialize it in the model root, then relabel.

The serving host cannot read the store (TF Serving >= 2.7 has no s3://), so a verified copy
goes into the model root it serves from, appearing at once (the store's download renames a
finished staging folder). TF Serving has no "get config" RPC: the config file in the model root
is the known-good config; it is rewritten atomically after every successful reload, and it is
also the file TF Serving (``--model_config_file``) and the local server read when they start.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from infra.local_server import background
from infra.serving_client import ServingClient, load_version_as_canary, promote_version, unload_version
from infra.tfserving_config import read_config, served_versions, write_config_atomically
from model_registry.manifest import Manifest
from model_registry.store import ModelStore, StoreError
from railyard.fsutil import sha256_file
from railyard.settings import Settings

CONFIG_FILE = "models.config"


@dataclass(frozen=True)
class ServingTarget:
    grpc: str  # host:port of the gRPC API (ModelService, PredictionService)
    rest: str  # http://host:port
    model_root: Path  # where this process writes version folders
    server_model_root: str  # the same folder as the server sees it (e.g. /models in the container)

    @property
    def config_path(self) -> Path:
        return self.model_root / CONFIG_FILE

    def base_path(self, model: str) -> str:
        return posixpath.join(self.server_model_root, model)

    def client(self, **options) -> ServingClient:
        return ServingClient(self.grpc, self.rest, **options)


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


def materialize(store: ModelStore, model: str, version: int, target: ServingTarget) -> Path:
    """A verified copy of the version under ``<model_root>/<model>/<version>/``.

    An existing folder is reused only if every file matches the store's manifest: a version
    folder is never overwritten, since TF Serving never reloads a changed loaded version.
    """
    dest = target.model_root / model / str(version)
    manifest = store.get_manifest(model, version)
    if dest.exists() and any(dest.iterdir()):
        mismatch = first_mismatch(dest, manifest)
        if mismatch:
            raise StoreError(
                f"{dest} already holds a different {model} version {version} ({mismatch}); "
                "refusing to overwrite a served version folder"
            )
        return dest
    return store.download(model, version, dest)


def first_mismatch(folder: Path, manifest: Manifest) -> str | None:
    for path, entry in sorted(manifest.files.items()):
        local = folder / path
        if not local.is_file():
            return f"{path} is missing"
        if local.stat().st_size != entry.size or sha256_file(local) != entry.sha256:
            return f"{path} differs from the manifest"
    return None


def deploy_canary(client: ServingClient, target: ServingTarget, model: str, version: int, timeout_s: float) -> dict:
    """Load the version next to ``stable`` and label it ``canary``; the labels afterwards."""
    config = load_version_as_canary(
        client, model, target.base_path(model), version, known_good_config(target), timeout_s=timeout_s
    )
    write_config_atomically(target.config_path, config)
    return served_versions(config, model)[1]


def remove_canary(client: ServingClient, target: ServingTarget, model: str, version: int) -> dict:
    """Unload a canary; ``stable`` keeps answering. The labels afterwards."""
    config = unload_version(client, model, target.base_path(model), version, known_good_config(target))
    write_config_atomically(target.config_path, config)
    return served_versions(config, model)[1]


def make_stable(client: ServingClient, target: ServingTarget, model: str, version: int, timeout_s: float) -> dict:
    """Point ``stable`` at the version: loaded first if it is not served, then relabelled."""
    if version not in served_versions(known_good_config(target), model)[0]:
        deploy_canary(client, target, model, version, timeout_s)
    config = promote_version(client, model, target.base_path(model), version, known_good_config(target))
    write_config_atomically(target.config_path, config)
    return served_versions(config, model)[1]


def resolve_target(settings: Settings, *, start_local: bool = True) -> ServingTarget | None:
    """The configured TF Serving, or the local server (started in the background if needed;
    None when it is not running and ``start_local`` is False)."""
    model_root = settings.resolved_serving_model_root
    model_root.mkdir(parents=True, exist_ok=True)
    server_root = settings.serving_server_model_root or str(model_root)
    if settings.serving_grpc and settings.serving_rest:
        return ServingTarget(settings.serving_grpc, settings.serving_rest, model_root, server_root)
    if start_local:
        state = background.ensure_running(
            settings.local_serving_dir,
            model_root / CONFIG_FILE,
            settings.local_serving_rest_port,
            settings.local_serving_grpc_port,
        )
    else:
        state = background.running(settings.local_serving_dir)
        if state is None:
            return None
    return ServingTarget(state.grpc_target, state.rest_url, model_root, server_root)
