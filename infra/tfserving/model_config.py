"""TF Serving config files, built with TF Serving's own protos (not string templates).

``ModelServerConfig`` comes from the ``tensorflow-serving-api`` wheel (a light import: it does
not pull in TensorFlow). The wheel does not ship ``BatchingParameters``
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto) nor ``MonitoringConfig``
(tensorflow_serving/config/monitoring_config.proto), so those two are rendered in their
documented text format by hand.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection, Mapping
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

from infra.tfserving.protocol import LABEL_PATTERN, MODEL_PLATFORM
from railyard.fsutil import atomic_write_text
from railyard.settings import validate_model_name


def render_model_config(
    model_name: str,
    base_path: str | Path,
    versions: Collection[int],
    labels: Mapping[str, int],
    *,
    base: ModelServerConfig | None = None,
) -> ModelServerConfig:
    """One model served with ``specific`` versions and ``version_labels``.

    A reload replaces TF Serving's whole model list, so pass the config the server holds as
    ``base`` to keep its other models: this model's entry is replaced (or appended).
    An empty ``versions`` is valid and means "serve nothing" (TF Serving unloads them all).
    """
    validate_model_name(model_name)
    base_path = str(base_path)
    if not posixpath.isabs(base_path) and not re.match(r"[a-z][a-z0-9+.-]*://", base_path):
        # server_core.cc ValidateModelConfigList rejects relative base paths (URIs are fine).
        raise ValueError(f"base_path for model {model_name!r} must be absolute, got {base_path!r}")
    checked = sorted({_check_version(version) for version in versions})
    for label, version in labels.items():
        if not LABEL_PATTERN.fullmatch(label):
            raise ValueError(f"invalid version label {label!r} for model {model_name!r}: use [a-zA-Z0-9_]+")
        if version not in checked:
            raise ValueError(
                f"label {label!r} points at version {version} of model {model_name!r}, "
                f"which is not among the served versions {checked}"
            )

    entry = ModelConfig(name=model_name, base_path=base_path, model_platform=MODEL_PLATFORM)
    entry.model_version_policy.specific.versions.extend(checked)
    for label in sorted(labels):
        entry.version_labels[label] = labels[label]

    config = ModelServerConfig()
    if base is not None:
        for other in base.model_config_list.config:
            config.model_config_list.config.add().CopyFrom(entry if other.name == model_name else other)
    if model_name not in model_names(config):
        config.model_config_list.config.add().CopyFrom(entry)
    return config


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"model versions are non-negative integers, got {version!r}")
    return version


def model_names(config: ModelServerConfig) -> list[str]:
    return [entry.name for entry in config.model_config_list.config]


def served_versions(config: ModelServerConfig, model_name: str) -> tuple[set[int], dict[str, int]]:
    """The ``specific`` versions and the labels a config gives one model (empty if absent)."""
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return set(entry.model_version_policy.specific.versions), dict(entry.version_labels)
    return set(), {}


def to_text(config: ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def parse_text(text: str, *, source: str = "model config") -> ModelServerConfig:
    try:
        return text_format.Parse(text, ModelServerConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"{source} is not a valid TF Serving ModelServerConfig: {exc}") from exc


def read_config(path: Path) -> ModelServerConfig:
    return parse_text(Path(path).read_text(encoding="utf-8"), source=str(path))


def write_config_atomically(path: Path, config: ModelServerConfig) -> None:
    """Temp file + rename: TF Serving's file poll never reads half a config."""
    atomic_write_text(Path(path), to_text(config))


def ensure_config_file(path: Path) -> None:
    """An empty config (serve nothing) where none is yet, so a server can start from the file."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_config_atomically(path, ModelServerConfig())
