"""Ship a published store version to TF Serving: materialize it in the model root, then relabel.

The serving host cannot read the store (TF Serving >= 2.7 has no s3://), so a verified copy
goes into the model root it serves from, appearing at once (the store's download renames a
finished staging folder). The labels then move (infra/rollout/labels.py), and the config that
was applied becomes the known-good config in the model root (infra/tfserving/target.py).

A target of several replicas (one model root) moves as one: the ``client`` given is the first
replica's, and a client like it is opened for each other replica, so every load, label move
and rollback reaches all of them (a label moves only once every replica has the version).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.local_server import background
from infra.rollout.labels import load_version_as_canary, promote_version, unload_version
from infra.tfserving.client import ServingClient
from infra.tfserving.model_config import served_versions, write_config_atomically
from infra.tfserving.protocol import CONFIG_FILE
from infra.tfserving.target import Replica, ServingTarget, known_good_config
from model_registry.manifest import Manifest
from model_registry.store import ModelStore, StoreError
from railyard.fsutil import sha256_file
from railyard.settings import Settings


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


@contextmanager
def every_replica(client: ServingClient, target: ServingTarget) -> Iterator[list[ServingClient]]:
    """``client`` (the first replica's) and a client like it for each other replica of the target."""
    if not target.other_replicas:
        yield [client]
        return
    options = {"timeout_s": client.timeout_s, "attempts": client.attempts, "backoff_s": client.backoff_s}
    with target.clients(**options) as clients:
        yield [client, *clients[1:]]


def deploy_canary(client: ServingClient, target: ServingTarget, model: str, version: int, timeout_s: float) -> dict:
    """Load the version next to ``stable`` (on every replica) and label it ``canary``; the labels afterwards."""
    with every_replica(client, target) as clients:
        config = load_version_as_canary(
            clients, model, target.base_path(model), version, known_good_config(target), timeout_s=timeout_s
        )
    write_config_atomically(target.config_path, config)
    return served_versions(config, model)[1]


def remove_canary(client: ServingClient, target: ServingTarget, model: str, version: int) -> dict:
    """Unload a canary; ``stable`` keeps answering. The labels afterwards."""
    with every_replica(client, target) as clients:
        config = unload_version(clients, model, target.base_path(model), version, known_good_config(target))
    write_config_atomically(target.config_path, config)
    return served_versions(config, model)[1]


def make_stable(client: ServingClient, target: ServingTarget, model: str, version: int, timeout_s: float) -> dict:
    """Point ``stable`` at the version: loaded first if it is not served, then relabelled."""
    if version not in served_versions(known_good_config(target), model)[0]:
        deploy_canary(client, target, model, version, timeout_s)
    with every_replica(client, target) as clients:
        config = promote_version(clients, model, target.base_path(model), version, known_good_config(target))
    write_config_atomically(target.config_path, config)
    return served_versions(config, model)[1]


def local_replica_dir(settings: Settings, index: int) -> Path:
    """State folder of local replica ``index``: the first where it always was, the others beside it."""
    return settings.local_serving_dir if index == 0 else settings.local_serving_dir / f"replica-{index}"


def resolve_target(settings: Settings) -> ServingTarget | None:
    """The configured TF Serving (every replica), or the local server with every other local
    replica that runs (``railyard serve --replicas N``); None when the local server does not run
    (it is never started here: the entry point decides, ``background.start_for``). A configured
    endpoint that is one of this home's local servers (``railyard serve`` in the foreground) gets
    its reload token."""
    model_root = settings.resolved_serving_model_root
    model_root.mkdir(parents=True, exist_ok=True)
    server_root = settings.serving_server_model_root or str(model_root)
    if configured := settings.serving_replicas:
        first, *others = (Replica(grpc, rest, _local_reload_token(settings, grpc)) for grpc, rest in configured)
        return ServingTarget(first.grpc, first.rest, model_root, server_root, first.reload_token, tuple(others))
    state = background.running(settings.local_serving_dir)
    if state is None:
        return None
    token = background.reload_token(settings.local_serving_dir)
    others = tuple(_running_local_replicas(settings, model_root / CONFIG_FILE))
    return ServingTarget(state.grpc_target, state.rest_url, model_root, server_root, token, others)


def refuse_taken_local_ports(settings: Settings) -> None:
    """Refuse at once (PortTaken) a local serving port set in the settings that another program
    holds, unless the serving is elsewhere or this home's local server already runs."""
    if not settings.serving_replicas and background.running(settings.local_serving_dir) is None:
        background.check_ports_free(background.port_settings(settings))


def _local_reload_token(settings: Settings, grpc_endpoint: str) -> str | None:
    """The reload token of this home's running local server at ``grpc_endpoint``, if it is one."""
    host, _, port = grpc_endpoint.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit():
        return None
    for state_dir, state in _home_servers(settings):
        if state.grpc_port == int(port):
            return background.reload_token(state_dir)
    return None


def _home_servers(settings: Settings) -> Iterator[tuple[Path, background.LocalServerState]]:
    """The state folder and state of each local server of this home that runs, replica 0 first."""
    found = sorted(
        int(path.name.removeprefix("replica-"))
        for path in settings.local_serving_dir.glob("replica-*")
        if path.name.removeprefix("replica-").isdigit()
    )
    for index in (0, *found):
        state_dir = local_replica_dir(settings, index)
        if (state := background.running(state_dir)) is not None:
            yield state_dir, state


def _running_local_replicas(settings: Settings, config_path: Path) -> Iterator[Replica]:
    """Local replicas 1, 2, ... that run (one that is down catches up from the shared config
    file when it starts again); one serving another config file is refused."""
    for state_dir, state in _home_servers(settings):
        if state_dir == settings.local_serving_dir:
            continue
        if Path(state.config_path) != config_path:
            raise background.LocalServerError(
                f"local {state_dir.name} (pid {state.pid}) serves {state.config_path}, not {config_path}; "
                "stop it with `railyard serve --stop`"
            )
        yield Replica(state.grpc_target, state.rest_url, background.reload_token(state_dir))
