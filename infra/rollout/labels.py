"""The label moves of a release, over the transport client: load first, then move the label.

TF Serving refuses a label on a version that is not AVAILABLE yet (tensorflow/serving#1230),
and keeps a rejected config as its current one, so every move sends the known-good config
again when it fails.

``client`` may be one client or one per replica (replicas share the model root and the
known-good config): each reload goes to every replica, a version is awaited on every replica
before any label moves, and a failure on any replica sends the known-good config to all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from infra.tfserving.client import ServingClient, ServingError
from infra.tfserving.model_config import render_model_config, served_versions
from infra.tfserving.protocol import CANARY, STABLE

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

_T = TypeVar("_T")
Clients: TypeAlias = "ServingClient | Sequence[ServingClient]"  # one server, or every replica of it


def load_version_as_canary(
    client: Clients,
    model: str,
    base_path: str | Path,
    version: int,
    known_good: ModelServerConfig,
    *,
    timeout_s: float = 360.0,
    poll_s: float = 0.5,
) -> ModelServerConfig:
    """Serve ``version`` under the ``canary`` label next to the ``stable`` one; return the new config.

    Reload 1 adds the version with the existing labels only (TF Serving refuses a label on a
    version that is not AVAILABLE yet), then the version is awaited, then reload 2 points
    ``canary`` at it. Afterwards exactly the labelled versions are served (an older canary is
    unloaded). On any failure the known-good config is sent again, because TF Serving keeps a
    rejected config as its current one; then the error is raised.
    """
    versions, labels = served_versions(known_good, model)
    stable = labels.get(STABLE)
    final_labels = {CANARY: version} | ({STABLE: stable} if stable is not None else {})

    def move() -> ModelServerConfig:
        _send(client, render_model_config(model, base_path, versions | {version}, labels, base=known_good))
        for replica in _each(client):
            replica.wait_until_available(model, version, timeout_s=timeout_s, poll_s=poll_s)
        final = render_model_config(model, base_path, set(final_labels.values()), final_labels, base=known_good)
        return _send(client, final)

    return _or_restore(client, known_good, move)


def promote_version(
    client: Clients, model: str, base_path: str | Path, version: int, known_good: ModelServerConfig
) -> ModelServerConfig:
    """Point ``stable`` (and ``canary``) at an already served version; the old stable is unloaded."""
    versions, _ = served_versions(known_good, model)
    if version not in versions:
        raise ValueError(f"version {version} of model {model!r} is not served; load it as canary first")
    labels = {STABLE: version, CANARY: version}
    config = render_model_config(model, base_path, {version}, labels, base=known_good)
    return _or_restore(client, known_good, lambda: _send(client, config))


def unload_version(
    client: Clients, model: str, base_path: str | Path, version: int, known_good: ModelServerConfig
) -> ModelServerConfig:
    """Stop serving a (canary) version; ``canary`` falls back to the stable version, if any."""
    versions, labels = served_versions(known_good, model)
    stable = labels.get(STABLE)
    if stable == version:
        raise ValueError(f"version {version} is the stable version of model {model!r}; promote another version first")
    kept = {label: target for label, target in labels.items() if target != version}
    if labels.get(CANARY) == version and stable is not None:
        kept[CANARY] = stable
    config = render_model_config(model, base_path, versions - {version}, kept, base=known_good)
    return _or_restore(client, known_good, lambda: _send(client, config))


def _each(client: Clients) -> list[ServingClient]:
    return list(client) if isinstance(client, Sequence) else [client]


def _send(client: Clients, config: ModelServerConfig) -> ModelServerConfig:
    for replica in _each(client):
        replica.reload_config(config)
    return config


def _or_restore(client: Clients, known_good: ModelServerConfig, change: Callable[[], _T]) -> _T:
    try:
        return change()
    except Exception as exc:
        replicas = _each(client)
        failed = 0
        for replica in replicas:  # every replica, even one the change never reached: it may be half-told
            try:
                replica.reload_config(known_good)
            except ServingError as restore_error:
                failed += 1
                exc.add_note(f"re-sending the known-good config also failed: {restore_error}")
        if not failed:
            exc.add_note("the known-good config was sent again" + (" to every replica" if len(replicas) > 1 else ""))
        elif failed < len(replicas):
            exc.add_note(
                f"the known-good config was sent again to {len(replicas) - failed} of {len(replicas)} replicas"
            )
        raise
