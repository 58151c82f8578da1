"""The label moves of a release, over the transport client: load first, then move the label.

TF Serving refuses a label on a version that is not AVAILABLE yet (tensorflow/serving#1230),
and keeps a rejected config as its current one, so every move sends the known-good config
again when it fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from infra.tfserving.client import ServingClient, ServingError
from infra.tfserving.model_config import render_model_config, served_versions
from infra.tfserving.protocol import CANARY, STABLE

if TYPE_CHECKING:
    from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

_T = TypeVar("_T")


def load_version_as_canary(
    client: ServingClient,
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
        client.reload_config(render_model_config(model, base_path, versions | {version}, labels, base=known_good))
        client.wait_until_available(model, version, timeout_s=timeout_s, poll_s=poll_s)
        final = render_model_config(model, base_path, set(final_labels.values()), final_labels, base=known_good)
        return _send(client, final)

    return _or_restore(client, known_good, move)


def promote_version(
    client: ServingClient, model: str, base_path: str | Path, version: int, known_good: ModelServerConfig
) -> ModelServerConfig:
    """Point ``stable`` (and ``canary``) at an already served version; the old stable is unloaded."""
    versions, _ = served_versions(known_good, model)
    if version not in versions:
        raise ValueError(f"version {version} of model {model!r} is not served; load it as canary first")
    labels = {STABLE: version, CANARY: version}
    config = render_model_config(model, base_path, {version}, labels, base=known_good)
    return _or_restore(client, known_good, lambda: _send(client, config))


def unload_version(
    client: ServingClient, model: str, base_path: str | Path, version: int, known_good: ModelServerConfig
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


def _send(client: ServingClient, config: ModelServerConfig) -> ModelServerConfig:
    client.reload_config(config)
    return config


def _or_restore(client: ServingClient, known_good: ModelServerConfig, change: Callable[[], _T]) -> _T:
    try:
        return change()
    except Exception as exc:
        try:
            client.reload_config(known_good)
        except ServingError as restore_error:
            exc.add_note(f"re-sending the known-good config also failed: {restore_error}")
        else:
            exc.add_note("the known-good config was sent again")
        raise
