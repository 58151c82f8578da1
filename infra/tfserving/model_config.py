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
from railyard.errors import RailyardError
from railyard.fsutil import atomic_write_text
from railyard.settings import validate_model_name


class ConfigFileError(RailyardError, ValueError):
    """A config (file) that is not a valid TF Serving ModelServerConfig; the message names it."""

    next_step = (
        "fix the file, or move it aside: with serving running, `railyard status` writes it again from "
        "MLflow's production version (a live server keeps serving what it loaded meanwhile)"
    )


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
    An empty ``versions`` means "serve nothing": the model's entry is left out (a reload unloads
    a model it does not name; a model listed with no version would hold TF Serving's start-up
    forever, waiting for it). The model list itself is always set, empty or not, since TF
    Serving takes no action at all on a config without one.
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
    config.model_config_list.SetInParent()
    if base is not None:
        for other in base.model_config_list.config:
            if other.name != model_name:
                config.model_config_list.config.add().CopyFrom(other)
            elif checked:
                config.model_config_list.config.add().CopyFrom(entry)
    if checked and model_name not in model_names(config):
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
        raise ConfigFileError(f"{source} is not a valid TF Serving ModelServerConfig: {exc}") from exc


def read_config(path: Path) -> ModelServerConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path} is not a valid TF Serving ModelServerConfig: not UTF-8 text ({exc})") from None
    return parse_text(text, source=str(path))


def without_unserved_models(config: ModelServerConfig) -> tuple[ModelServerConfig, list[str]]:
    """The config without the models whose ``specific`` policy lists no version, and their names.

    An older Railyard wrote such an entry after unloading a model's last version: TF Serving
    waits at start-up until every listed model has a servable version, so it would never start.
    """
    unserved = [
        entry.name
        for entry in config.model_config_list.config
        if entry.model_version_policy.WhichOneof("policy_choice") == "specific"
        and not entry.model_version_policy.specific.versions
    ]
    if not unserved:
        return config, []
    kept = ModelServerConfig()
    kept.model_config_list.SetInParent()
    for entry in config.model_config_list.config:
        if entry.name not in unserved:
            kept.model_config_list.config.add().CopyFrom(entry)
    return kept, unserved


def write_config_atomically(path: Path, config: ModelServerConfig) -> None:
    """Temp file + rename: TF Serving's file poll never reads half a config."""
    atomic_write_text(Path(path), to_text(config))


def ensure_config_file(path: Path) -> list[str]:
    """A config file a server can start from: an empty one (serve nothing) where none is yet;
    models listed with no version to serve are dropped from it (their names are returned).
    A file that is not a valid config raises ConfigFileError naming it."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_config_atomically(path, ModelServerConfig())
        return []
    config, unserved = without_unserved_models(read_config(path))
    if unserved:
        write_config_atomically(path, config)
    return unserved
