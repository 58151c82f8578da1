"""The versioned model store: ``<root>/<model>/<version>/`` as TF Serving expects, plus ``railyard.json``.

Two backends share the rules below; they differ only in the primitives at the end of
``ModelStore`` (``local.py``: a folder, the embedded default; ``s3.py``: any S3 endpoint).

- A publisher first takes its version number exclusively (the local backend creates the
  folder, S3 creates a claim object with ``If-None-Match: *``), so two publishers never write
  into the same version; the loser of a race takes the next number.
- Files first, the manifest last, created only if absent. A version without a manifest does
  not exist for readers, but its number stays taken (a crashed publication is never reused).
- Downloads check every size and sha256 against the manifest before anything becomes visible.
- A number is never reused, not even after deletion: a tombstone remembers it, because TF
  Serving never reloads a version directory it has already loaded.
- One release at a time per model: ``release_lock`` is held in the store, the one place that
  every run, worker and CLI shares (local: ``flock`` on a file; S3: a lease object renewed
  while held). Its file/object sits beside the versions and is never one (not a number).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_registry.history import record_bytes, verify
from model_registry.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    SourceTree,
    check_metadata,
    collect_source,
)
from railyard.errors import RailyardError, Refused
from railyard.fsutil import sha256_file
from railyard.settings import validate_model_name

logger = logging.getLogger("railyard.store")

# Folder (local) or key prefix (S3) under <model>/ holding one empty marker per deleted version.
TOMBSTONE_DIR = ".railyard-deleted"
# How many successive numbers a publisher tries before giving up on a crowd of racing publishers.
MAX_CLAIM_ATTEMPTS = 20
# The release lock's file (local) or lease object (S3) under <model>/, holding its holder as JSON.
LOCK_NAME = ".railyard-lock"
# Folder (local) or key prefix (S3) under <model>/ holding the transition log, one record each.
HISTORY_DIR = ".railyard-history"
_HISTORY_APPEND_ATTEMPTS = 5
_VERSION_NAME = re.compile(r"^[1-9][0-9]*$")


class StoreError(RailyardError):
    """A model store operation failed."""


class InvalidStoreURI(Refused, ValueError):
    """A store URI that names no store Railyard can open: nothing was opened or changed."""

    next_step = (
        "nothing was changed; set RAILYARD_STORE_URI to a local path, file:///path (on this host) or "
        "s3://bucket/prefix (bucket names: 3-63 lowercase letters, digits, '.' and '-')"
    )


class VersionConflictError(StoreError):
    """Another publisher owns the version this one tried to write."""


class IntegrityError(Refused, StoreError):
    """A stored version does not match its manifest (corrupted, incomplete or tampered with)."""


class VersionNotFoundError(Refused, StoreError):
    """No complete version (one with a manifest) with that number exists."""


class ProtectedVersionError(Refused, StoreError):
    """The version is protected (in production or staging) and may not be deleted."""


class LockTimeoutError(StoreError):
    """Another holder kept the model's release lock for longer than we were willing to wait."""

    next_step = "another release of this model is in progress: try again once it has finished"


class LockLostError(StoreError):
    """The release lock is no longer ours (S3 only): its lease ran out unrenewed, or was taken over."""


class ReleaseLease:
    """A held release lock. Call ``check()`` between critical steps: it raises once the lock is lost."""

    def __init__(self, model: str, owner: str, acquired_at: float, expires_at: float = math.inf):
        self.model = model
        self.owner = owner
        self.acquired_at = acquired_at  # epoch seconds
        self.expires_at = expires_at  # pushed on by the S3 renewal; a local lock never expires
        self.lost: str | None = None  # why it was lost, set by the S3 renewal

    def check(self) -> None:
        lost = self.lost
        if lost is None and time.time() >= self.expires_at:  # the renewal may be stuck in a request
            lost = f"its lease expired at {utc_timestamp(self.expires_at)} before it could be renewed"
        if lost is not None:
            raise LockLostError(f"{self.model}'s release lock, taken as {self.owner}, was lost: {lost}")


@dataclass(frozen=True)
class PublishedVersion:
    model: str
    version: int
    uri: str  # the version folder, e.g. s3://bucket/prefix/recmodel/3/
    manifest: Manifest
    reused: bool = False  # True: the same model (data fingerprint + code version) was already published


@dataclass(frozen=True)
class VersionScan:
    taken: frozenset[int]  # every number in use: complete, half-published or deleted
    complete: frozenset[int]  # versions with a manifest: the only ones readers see
    deleted: frozenset[int] = frozenset()  # tombstoned: their numbers stay taken

    @property
    def unfinished(self) -> frozenset[int]:
        """Publications that never wrote their manifest (a crash, a lost connection)."""
        return self.taken - self.complete - self.deleted


def parse_version_name(name: str) -> int | None:
    """The version number a folder/key name stands for, or None (TF Serving's numeric names only)."""
    return int(name) if _VERSION_NAME.fullmatch(name) else None


def utc_timestamp(at: float | None = None) -> str:
    """Now, or the epoch seconds ``at``, as an ISO 8601 UTC timestamp."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_lock_record(data: bytes | None) -> dict | None:
    """The holder a lock file/object names, or None if it is absent or not (yet) complete JSON."""
    try:
        record = json.loads(data) if data else None
    except ValueError:
        return None
    return record if isinstance(record, dict) and {"owner", "acquired_at"} <= record.keys() else None


def check_version(version: Any) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"invalid version {version!r}: versions are integers >= 1")
    return version


class ModelStore(ABC):
    uri: str

    def publish(self, model: str, source_dir: Path, *, metadata: dict[str, Any]) -> PublishedVersion:
        """Publish a SavedModel folder as the next version, or return the version already holding it.

        ``metadata`` must hold ``data_fingerprint`` and ``code_version`` (the model's identity)
        and may hold ``mlflow_run_id``, ``metrics`` and anything else that is plain JSON.
        """
        validate_model_name(model)
        metadata = check_metadata(metadata)
        tree = collect_source(source_dir)
        scan = self._scan(model)
        existing = self._find_published(model, scan, (metadata["data_fingerprint"], metadata["code_version"]))
        if existing is not None:
            logger.info("%s version %d already holds this model; not publishing again", model, existing.version)
            return PublishedVersion(model, existing.version, self.version_uri(model, existing.version), existing, True)

        version = self._claim_next_version(model, scan)
        location = self.version_uri(model, version)
        logger.info("publishing %s (%d files) to %s", source_dir, len(tree.files), location)
        files = self._upload(model, version, tree)
        manifest = Manifest(
            model=model,
            version=version,
            created_at=utc_timestamp(),
            files=files,
            metadata=metadata,
            empty_dirs=tree.empty_dirs,
        )
        if not self._create_manifest(model, version, manifest.to_json()):
            raise VersionConflictError(
                f"{location} already has a manifest: another publisher completed this version "
                "(nothing of it was overwritten)"
            )
        logger.info("published %s version %d: %d bytes at %s", model, version, manifest.total_size, location)
        return PublishedVersion(model, version, location, manifest)

    def find(self, model: str, data_fingerprint: str, code_version: str) -> Manifest | None:
        """The manifest of the complete version holding this model (same data and code), if any."""
        validate_model_name(model)
        return self._find_published(model, self._scan(model), (data_fingerprint, code_version))

    def list_versions(self, model: str) -> list[int]:
        """Complete versions only (manifest present), ascending."""
        validate_model_name(model)
        return sorted(self._scan(model).complete)

    def latest_version(self, model: str) -> int | None:
        versions = self.list_versions(model)
        return versions[-1] if versions else None

    def get_manifest(self, model: str, version: int) -> Manifest:
        validate_model_name(model)
        check_version(version)
        data = self._read_manifest(model, version)
        if data is None:
            raise VersionNotFoundError(f"{model} version {version} does not exist in {self.uri}")
        where = f"{self.version_uri(model, version)}{MANIFEST_NAME}"
        try:
            manifest = Manifest.from_json(data)
        except ValueError as error:
            raise IntegrityError(f"manifest {where} is invalid: {error}") from None
        if (manifest.model, manifest.version) != (model, version):
            raise IntegrityError(f"manifest {where} describes {manifest.model} version {manifest.version}")
        return manifest

    def download(self, model: str, version: int, dest: Path) -> Path:
        """Download a verified copy of a version to ``dest`` (absent or an empty folder).

        Everything lands in a hidden staging folder beside ``dest`` first, is checked against
        the manifest, and then appears at once by renaming the folder, so TF Serving never sees
        a partial version (not even ``saved_model.pb`` before the variables).
        """
        manifest = self.get_manifest(model, version)
        dest = Path(dest)
        if dest.exists() and not (dest.is_dir() and not any(dest.iterdir())):
            raise StoreError(f"refusing to download into {dest}: it exists and is not an empty folder")
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
        try:
            self._download(model, version, sorted(manifest.files), staging)
            for path, entry in sorted(manifest.files.items()):
                self._verify(model, version, staging / path, path, entry)
            for path in manifest.empty_dirs:
                (staging / path).mkdir(parents=True, exist_ok=True)
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the model from a serving user
            os.rename(staging, dest)  # replaces an empty dest folder atomically
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("downloaded %s version %d (%d bytes, verified) to %s", model, version, manifest.total_size, dest)
        return dest

    def read_file(self, model: str, version: int, path: str) -> bytes | None:
        """One file of a version, checked against its manifest (None: the version has no such file)."""
        entry = self.get_manifest(model, version).files.get(path)
        if entry is None:
            return None
        with tempfile.TemporaryDirectory(prefix=".railyard-read-") as staging:
            self._download(model, version, [path], Path(staging))
            local = Path(staging) / path
            self._verify(model, version, local, path, entry)
            return local.read_bytes()

    def delete_version(self, model: str, version: int, *, protected: Collection[int] = ()) -> None:
        validate_model_name(model)
        check_version(version)
        if version in set(protected):
            raise ProtectedVersionError(f"refusing to delete {model} version {version}: it is in production or staging")
        if version not in self._scan(model).complete:
            raise VersionNotFoundError(f"{model} version {version} does not exist in {self.uri}")
        self._delete(model, version)
        logger.info("deleted %s version %d from %s", model, version, self.uri)

    def remove_unfinished(self, model: str) -> list[int]:
        """Remove what interrupted publications left (files without a manifest); their numbers
        stay taken, so no later version reuses them. Call it holding the release lock: no
        publication is in flight then. Never touches a complete version."""
        validate_model_name(model)
        unfinished = sorted(self._scan(model).unfinished)
        for version in unfinished:
            self._delete(model, version)
            logger.info("removed the unfinished publication of %s version %d from %s", model, version, self.uri)
        return unfinished

    def apply_retention(self, model: str, keep_last: int, *, protected: Collection[int] = ()) -> list[int]:
        """Delete all complete versions except the newest ``keep_last`` and the protected ones."""
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
        versions = self.list_versions(model)
        keep = set(versions[-keep_last:]) | set(protected)
        doomed = [version for version in versions if version not in keep]
        for version in doomed:
            self.delete_version(model, version, protected=protected)
        return doomed

    @contextmanager
    def release_lock(
        self, model: str, *, owner: str, lease_s: float, wait_s: float, poll_s: float = 0.5
    ) -> Iterator[ReleaseLease]:
        """Hold the model's release lock for the block; released on leaving it, also on errors.

        ``owner`` says who holds it (shown to waiters). Waits up to ``wait_s`` seconds, then
        raises ``LockTimeoutError``. ``lease_s`` (S3 only) is how long the lock outlives a holder
        that dies without releasing it; the holder renews it every ``lease_s / 3`` meanwhile.
        Not re-entrant: a nested ``release_lock`` on the same model waits for itself and times out.
        """
        validate_model_name(model)
        deadline = time.monotonic() + wait_s
        lease = self._try_lock(model, owner, lease_s)
        if lease is None and wait_s > 0:
            logger.info("waiting up to %g s for %s's release lock, held by %s", wait_s, model, self._lock_holder(model))
        while lease is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeoutError(
                    f"{model}'s release lock in {self.uri} is held by {self._lock_holder(model)} (waited {wait_s:g} s)"
                )
            time.sleep(min(poll_s, remaining))
            lease = self._try_lock(model, owner, lease_s)
        try:
            yield lease
        finally:
            self._unlock(lease)

    def _lock_holder(self, model: str) -> str:
        record = parse_lock_record(self._read_lock(model))
        if record is None:  # released meanwhile, or caught between taking and naming it
            return "an unknown holder"
        return f"{record['owner']} since {utc_timestamp(record['acquired_at'])}"

    def _find_published(self, model: str, scan: VersionScan, identity: tuple[str, str]) -> Manifest | None:
        for version in sorted(scan.complete, reverse=True):
            manifest = self.get_manifest(model, version)
            if manifest.identity == identity:
                return manifest
        return None

    def _claim_next_version(self, model: str, scan: VersionScan) -> int:
        candidate = max(scan.taken, default=0) + 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            if self._claim(model, candidate):
                return candidate
            logger.info("%s version %d was taken by another publisher; trying the next number", model, candidate)
            candidate += 1
        raise VersionConflictError(
            f"could not take a version number for {model} in {self.uri} after {MAX_CLAIM_ATTEMPTS} tries: "
            "too many publishers at once"
        )

    def _verify(self, model: str, version: int, local: Path, path: str, entry: FileEntry) -> None:
        where = f"{self.version_uri(model, version)}{path}"
        size = local.stat().st_size
        if size != entry.size:
            raise IntegrityError(f"{where} has {size} bytes but its manifest says {entry.size}: refusing the version")
        if sha256_file(local) != entry.sha256:
            raise IntegrityError(f"{where} does not match the sha256 in its manifest: refusing the corrupted version")

    def _missing(self, model: str, version: int, path: str) -> IntegrityError:
        return IntegrityError(
            f"{self.version_uri(model, version)}{path} is listed in the manifest but missing: "
            "refusing the incomplete version"
        )

    # -- the transition log (model_registry/history.py) -------------------------------------

    def append_transition(self, model: str, entry: dict) -> dict:
        """Append a stage change to the model's log (verified first); the record as written."""
        validate_model_name(model)
        for _ in range(_HISTORY_APPEND_ATTEMPTS):
            raws = self._read_history(model)
            verify(raws, self.history_uri(model))
            data = record_bytes(raws[-1] if raws else None, len(raws), entry)
            if self._append_history(model, len(raws), data):
                return json.loads(data)
        raise StoreError(f"could not append to {self.history_uri(model)}: other writers kept taking the next record")

    def transitions(self, model: str) -> list[dict]:
        """Every record of the model's log, once its chain verifies (HistoryTampered otherwise)."""
        validate_model_name(model)
        return verify(self._read_history(model), self.history_uri(model))

    # Backend primitives. Model names and versions are validated before any of these is called.

    @abstractmethod
    def history_uri(self, model: str) -> str:
        """Where the model's transition log lives (for messages)."""

    @abstractmethod
    def _append_history(self, model: str, sequence: int, data: bytes) -> bool:
        """Create record ``sequence`` of the log, only if absent; False if it exists."""

    @abstractmethod
    def _read_history(self, model: str) -> list[bytes]:
        """Every record of the log, in sequence order (by name)."""

    @abstractmethod
    def version_uri(self, model: str, version: int) -> str:
        """The URI of a version folder, ending in '/'."""

    @abstractmethod
    def _scan(self, model: str) -> VersionScan: ...

    @abstractmethod
    def _claim(self, model: str, version: int) -> bool:
        """Take a version number exclusively; False if it is already taken."""

    @abstractmethod
    def _upload(self, model: str, version: int, tree: SourceTree) -> dict[str, FileEntry]:
        """Write every file of the tree into the claimed version; return what was written."""

    @abstractmethod
    def _create_manifest(self, model: str, version: int, data: bytes) -> bool:
        """Create the manifest atomically, only if absent; False if one exists."""

    @abstractmethod
    def _read_manifest(self, model: str, version: int) -> bytes | None: ...

    @abstractmethod
    def _download(self, model: str, version: int, paths: list[str], dest_dir: Path) -> None:
        """Copy the files into dest_dir; raise ``self._missing(...)`` for a file the store lacks."""

    @abstractmethod
    def _delete(self, model: str, version: int) -> None:
        """Tombstone first, then the manifest (the version disappears at once), then the files."""

    @abstractmethod
    def _try_lock(self, model: str, owner: str, lease_s: float) -> ReleaseLease | None:
        """Take the release lock if it is free (S3: or its lease expired); None if it is held."""

    @abstractmethod
    def _read_lock(self, model: str) -> bytes | None:
        """The lock file/object's content (its holder as JSON), or None."""

    @abstractmethod
    def _unlock(self, lease: ReleaseLease) -> None:
        """Release a lock ``_try_lock`` took; never one that another holder took over."""
