"""The local server's model manager: TF Serving's ServerCore semantics, in Python.

Mirrors, from tensorflow/serving:
- model_servers/server_core.cc ``ReloadConfig``: validate, check the labels
  (``UpdateModelVersionLabelMap``), then apply the model list; wait only for new model names
  (TF Serving also keeps a refused config in memory; this server writes only applied ones to
  its config file, so a restart never brings a refused config back);
- sources/storage_path/file_system_storage_path_source.cc: version directories are read when a
  config is applied (this server never polls on its own); a missing ``specific`` version is a
  warning; if none exists, every version of the model is unloaded;
- core/availability_preserving_policy.cc (the model server's policy): an un-aspired version
  keeps serving until an aspired one is AVAILABLE (a failed aspired version never is);
- core/aspired_versions_manager.cc: loads retried ``max_num_load_retries`` times (state stays
  LOADING), then END with the error; a failed version number is not loaded again;
- model_servers/get_model_status_impl.cc: status per version, END kept after unloading.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tensorflow_serving.config.model_server_config_pb2 import ModelConfig, ModelServerConfig

from infra.local_server.errors import StatusError, status_from_exception
from infra.local_server.servable import Servable, WarmupRecorder
from infra.tfserving.protocol import (
    AVAILABLE,
    END,
    LOADING,
    MODEL_PLATFORM,
    NO_LABELS_YET,
    START,
    UNLOADING,
    VersionStatus,
)

log = logging.getLogger(__name__)


@dataclass
class _Version:
    path: Path
    state: str = START
    aspired: bool = True
    error: StatusError | None = None
    servable: Servable | None = None


class ServerCore:
    def __init__(
        self,
        *,
        allow_version_labels_for_unavailable_models: bool = True,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        num_load_threads: int = 2,
        on_config_applied: Callable[[ModelServerConfig], None] | None = None,
        model_root: Path | None = None,
        on_warmup: WarmupRecorder | None = None,
    ) -> None:
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._max_retries = max_num_load_retries
        self._retry_interval_s = load_retry_interval_s
        self._on_config_applied = on_config_applied
        self._on_warmup = on_warmup  # told of each version's warm-up replay (its metrics)
        # Every base_path must resolve (symlinks too) inside it; None: anywhere, as TF Serving.
        self._model_root = None if model_root is None else Path(model_root).resolve()
        self._reload_lock = threading.Lock()  # one reload at a time, like ServerCore's config_mu_
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(num_load_threads, thread_name_prefix="local-serving-load")
        self._labels: dict[str, dict[str, int]] | None = None  # None: no config applied yet
        self._models: dict[str, dict[int, _Version]] = {}
        self._sourced: set[str] = set()  # model names of the last applied model list
        self._failed: set[tuple[str, int]] = set()

    # -- configuration --------------------------------------------------------------------

    def start(self, config: ModelServerConfig) -> None:
        """Apply the initial config and wait for every model, as the server does at start-up."""
        self._reload(config, store=False)

    def reload_config(self, config: ModelServerConfig) -> None:
        self._reload(config, store=True)

    def _reload(self, new_config: ModelServerConfig, *, store: bool) -> None:
        with self._reload_lock:
            kind = new_config.WhichOneof("config")
            if kind is None:
                log.info("Taking no action for empty config.")
                return
            if kind != "model_config_list":
                raise StatusError(
                    "FAILED_PRECONDITION",
                    "Cannot transition to requested config. It is only legal to transition "
                    "from one ModelConfigList to another.",
                )
            _validate_model_list(new_config, self._model_root)
            with self._lock:
                self._labels = self._checked_labels(new_config)
            self._apply_model_list(new_config)
            # Persisted only once applied: a refused config never comes back after a restart.
            if store and self._on_config_applied is not None:
                self._on_config_applied(new_config)

    def _checked_labels(self, config: ModelServerConfig) -> dict[str, dict[str, int]]:
        """server_core.cc UpdateModelVersionLabelMap (runs *before* new versions load)."""
        labels: dict[str, dict[str, int]] = {}
        for entry in config.model_config_list.config:
            states = self._models.get(entry.name, {})
            for label, version in entry.version_labels.items():
                existing = (self._labels or {}).get(entry.name, {}).get(label)
                allowed = self._allow_unavailable_labels and existing in (None, version)
                state = states.get(version)
                if not allowed and (state is None or state.state != AVAILABLE):
                    raise StatusError(
                        "FAILED_PRECONDITION",
                        f"Request to assign label to version {version} of model {entry.name}, "
                        "which is not currently available for inference",
                    )
                labels.setdefault(entry.name, {})[label] = version
        return labels

    def _apply_model_list(self, config: ModelServerConfig) -> None:
        entries = {entry.name: entry for entry in config.model_config_list.config}
        new_models = set(entries) - self._sourced
        with self._lock:
            for name in self._sourced - set(entries):
                self._aspire(name, {})
            for name, entry in entries.items():
                versions = _versions_on_disk(entry)
                if versions is not None:
                    self._aspire(name, versions)
            self._sourced = set(entries)
        self._await_models(new_models, entries)

    def _await_models(self, names: set[str], entries: dict[str, ModelConfig]) -> None:
        """ServerCore::WaitUntilModelsAvailable: a reload returns once its new models settled."""
        with self._lock:
            self._changed.wait_for(
                lambda: (
                    self._stopping.is_set()
                    or all(v.state in (AVAILABLE, END) for name in names for v in self._models.get(name, {}).values())
                )
            )
            failures = []
            for name in sorted(names):
                states = self._models.get(name, {})
                if any(v.state == AVAILABLE for v in states.values()):
                    continue
                if not states:
                    # Real TF Serving waits forever here; saying why is more useful.
                    failures.append(f"{{{name} {_nothing_to_load(entries[name])}}}, ")
                for number, version in sorted(states.items()):
                    reason = f" due to error: {version.error}" if version.error else ""
                    failures.append(f"{{{{name: {name} version: {number}}}{reason}}}, ")
        if failures:
            raise StatusError("UNKNOWN", f"{len(failures)} model(s) did not become available: {{{''.join(failures)}}}")

    # -- version lifecycle (call with self._lock held) ------------------------------------

    def _aspire(self, name: str, wanted: dict[int, Path]) -> None:
        states = self._models.setdefault(name, {})
        for number, version in states.items():
            # A failed version stays in the manager (in error) while the config names it.
            version.aspired = number in wanted and (version.state != END or version.error is not None)
        for number, path in wanted.items():
            current = states.get(number)
            if current is not None and current.state != END:
                current.aspired = True
            elif (name, number) in self._failed:
                log.warning("version %d of model %s failed to load before; it is not loaded again", number, name)
            else:
                states[number] = _Version(path=path)
                self._pool.submit(self._load, name, number)
        self._apply_policy(name)
        self._changed.notify_all()

    def _apply_policy(self, name: str) -> None:
        """AvailabilityPreservingPolicy::GetNextAction, repeated until it has nothing to unload."""
        while True:
            live = {n: v for n, v in self._models[name].items() if v.state != END or (v.aspired and v.error)}
            has_aspired = any(v.aspired for v in live.values())
            aspired_serving = any(v.aspired and v.state == AVAILABLE for v in live.values())
            unaspired_serving = sorted(n for n, v in live.items() if not v.aspired and v.state == AVAILABLE)
            if not unaspired_serving or (has_aspired and not aspired_serving and len(unaspired_serving) == 1):
                return
            self._models[name][unaspired_serving[0]].state = UNLOADING
            self._pool.submit(self._unload, name, unaspired_serving[0])

    def _load(self, name: str, number: int) -> None:
        with self._lock:
            version = self._models[name][number]
            if not version.aspired:
                version.state = END
                self._changed.notify_all()
                return
            version.state = LOADING
        for attempt in range(self._max_retries + 1):
            try:
                servable, error = Servable(version.path, self._on_warmup), None
                break
            except Exception as exc:  # noqa: BLE001 - the status carries the message; keep serving the rest
                servable, error = None, status_from_exception(exc)
                log.warning("Loading servable {name: %s version: %d} failed: %s", name, number, error)
            with self._lock:
                retry = version.aspired and attempt < self._max_retries
            if not retry or self._stopping.wait(self._retry_interval_s):
                break
        with self._lock:
            if error is not None:
                version.state, version.error = END, error
                self._failed.add((name, number))
            elif version.aspired:
                version.state, version.servable = AVAILABLE, servable
                log.info("Successfully loaded servable version {name: %s version: %d}", name, number)
            else:
                version.state = END
            self._apply_policy(name)
            self._changed.notify_all()

    def _unload(self, name: str, number: int) -> None:
        with self._lock:
            version = self._models[name][number]
            version.servable = None  # in-flight requests keep their own reference
            version.state = END
            log.info("Unloaded servable version {name: %s version: %d}", name, number)
            if version.aspired:  # re-aspired while unloading: load it again
                self._models[name][number] = _Version(path=version.path)
                self._pool.submit(self._load, name, number)
            self._changed.notify_all()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._changed.notify_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for states in self._models.values():
                for version in states.values():
                    version.servable = None

    # -- queries -----------------------------------------------------------------------------

    def servable(self, name: str, version: int | None = None, label: str | None = None) -> tuple[int, Servable]:
        """server_core.cc ServableRequestFromModelSpec + the manager's handle lookup."""
        if not name:
            raise StatusError("INVALID_ARGUMENT", "ModelSpec has no name specified.")
        with self._lock:
            if label is not None:
                if self._labels is None:
                    raise StatusError("UNAVAILABLE", f"{NO_LABELS_YET}{label}")
                version = self._labels.get(name, {}).get(label)
                if version is None:
                    raise StatusError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            states = self._models.get(name, {})
            if version is None:
                available = [n for n, v in states.items() if v.state == AVAILABLE]
                if not available:
                    raise StatusError("NOT_FOUND", f"Servable not found for request: Latest({name})")
                version = max(available)
            entry = states.get(version)
            if entry is None or entry.state != AVAILABLE:
                raise StatusError("NOT_FOUND", f"Servable not found for request: Specific({name}, {version})")
            return version, entry.servable

    def model_status(self, name: str, version: int | None = None) -> list[VersionStatus]:
        with self._lock:
            states = self._models.get(name, {})
            if version is not None:
                if version not in states:
                    raise StatusError("NOT_FOUND", f"Could not find version {version} of model {name}")
                numbers = [version]
            elif not states:
                raise StatusError("NOT_FOUND", f"Could not find any versions of model {name}")
            else:
                numbers = sorted(states)
            return [_status(number, states[number]) for number in numbers]

    def wait_until_settled(self, timeout_s: float | None = None) -> bool:
        """True once no version is loading or unloading (for tests and the CLI)."""
        with self._lock:
            return self._changed.wait_for(
                lambda: all(v.state in (AVAILABLE, END) for s in self._models.values() for v in s.values()),
                timeout=timeout_s,
            )


def _status(number: int, version: _Version) -> VersionStatus:
    if version.error is None:
        return VersionStatus(number, version.state)
    return VersionStatus(number, version.state, version.error.code, version.error.message)


def _validate_model_list(config: ModelServerConfig, model_root: Path | None) -> None:
    """server_core.cc ValidateModelConfigList, GetPlatform and the route check; and every
    base path inside the model root, checked before anything (labels included) changes."""
    seen: set[str] = set()
    for entry in config.model_config_list.config:
        if entry.name in seen:
            raise StatusError("INVALID_ARGUMENT", f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
        if not Path(entry.base_path).is_absolute():
            raise StatusError(
                "INVALID_ARGUMENT",
                f"Expected model {entry.name} to have an absolute path or URI; got base_path()={entry.base_path}",
            )
        if model_root is not None and not Path(entry.base_path).resolve().is_relative_to(model_root):
            raise StatusError(
                "INVALID_ARGUMENT",
                f"model {entry.name}: base_path {entry.base_path} is outside the model root {model_root}",
            )
        if not entry.model_platform:
            raise StatusError(
                "INVALID_ARGUMENT",
                "Illegal setting neither ModelServerConfig::model_type (deprecated) "
                "nor ModelServerConfig::model_platform.",
            )
        if entry.model_platform != MODEL_PLATFORM:
            raise StatusError(
                "INVALID_ARGUMENT", f"Model {entry.name} requests unsupported platform {entry.model_platform}"
            )


def _nothing_to_load(entry: ModelConfig) -> str:
    policy = entry.model_version_policy
    if policy.WhichOneof("policy_choice") == "specific":
        if not policy.specific.versions:
            return "has a specific version policy that lists no version"
        listed = ", ".join(map(str, sorted(policy.specific.versions)))
        return f"has none of its specific versions ({listed}) under {entry.base_path}"
    return f"has no version directories under {entry.base_path}"


def _versions_on_disk(entry: ModelConfig) -> dict[int, Path] | None:
    """The version directories the entry's policy asks for; None if the base path is missing."""
    base = Path(entry.base_path)
    if not base.is_dir():
        log.error("Could not find base path %s for servable %s", base, entry.name)
        return None
    on_disk = {int(child.name): child for child in base.iterdir() if child.name.isdigit() and child.is_dir()}
    policy = entry.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        wanted = set(policy.specific.versions)
        for missing in sorted(wanted - set(on_disk)):
            log.warning(
                "Version %d of servable %s, which was requested to be served as a 'specific' version in the "
                "servable's version policy, was not found in the file system",
                missing,
                entry.name,
            )
        chosen = {n: p for n, p in on_disk.items() if n in wanted}
    elif choice == "all":
        chosen = on_disk
    else:  # latest (the default policy)
        keep = sorted(on_disk)[-max(policy.latest.num_versions, 1) :]
        chosen = {n: on_disk[n] for n in keep}
    if not chosen:
        log.warning("No versions of servable %s found under base path %s", entry.name, base)
    return chosen
