"""The local-folder backend (the embedded default): the same layout and race rules as S3.

Exclusivity comes from the file system: ``mkdir`` takes a version number, files are created
with ``O_EXCL``, and the manifest is written to a temp file and hard-linked into place, which
fails if it exists — the local twin of S3's ``If-None-Match: *``. The release lock is an
``flock`` on ``<model>/.railyard-lock``, which the kernel drops when its holder dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from model_registry.manifest import MANIFEST_NAME, FileEntry, HashingReader, SourceTree
from model_registry.store import (
    HISTORY_DIR,
    LOCK_NAME,
    TOMBSTONE_DIR,
    ModelStore,
    ReleaseLease,
    VersionScan,
    parse_version_name,
)

_COPY_CHUNK = 1 << 20


class LocalStore(ModelStore):
    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    def version_uri(self, model: str, version: int) -> str:
        return f"{self._version_dir(model, version).as_uri()}/"

    def _version_dir(self, model: str, version: int) -> Path:
        return self.root / model / str(version)

    def _scan(self, model: str) -> VersionScan:
        model_dir = self.root / model
        taken, complete = set(), set()
        names = [child.name for child in model_dir.iterdir()] if model_dir.is_dir() else []
        for name in names:
            version = parse_version_name(name)
            if version is not None:
                taken.add(version)
                if (model_dir / name / MANIFEST_NAME).is_file():
                    complete.add(version)
        tombstones = model_dir / TOMBSTONE_DIR
        names = [child.name for child in tombstones.iterdir()] if tombstones.is_dir() else []
        deleted = {version for name in names if (version := parse_version_name(name)) is not None}
        return VersionScan(frozenset(taken | deleted), frozenset(complete), frozenset(deleted))

    def _claim(self, model: str, version: int) -> bool:
        (self.root / model).mkdir(parents=True, exist_ok=True)
        try:
            self._version_dir(model, version).mkdir()
        except FileExistsError:
            return False
        return True

    def _upload(self, model: str, version: int, tree: SourceTree) -> dict[str, FileEntry]:
        version_dir = self._version_dir(model, version)
        for path in tree.empty_dirs:
            (version_dir / path).mkdir(parents=True, exist_ok=True)
        return {path: _copy_hashing(source, version_dir / path) for path, source in tree.files}

    def _create_manifest(self, model: str, version: int, data: bytes) -> bool:
        return _create_once(self._version_dir(model, version), MANIFEST_NAME, data)

    def history_uri(self, model: str) -> str:
        return (self.root / model / HISTORY_DIR).as_uri()

    def _append_history(self, model: str, sequence: int, data: bytes) -> bool:
        folder = self.root / model / HISTORY_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return _create_once(folder, f"{sequence:08d}.json", data)

    def _read_history(self, model: str) -> list[bytes]:
        folder = self.root / model / HISTORY_DIR
        return [path.read_bytes() for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []

    def _read_manifest(self, model: str, version: int) -> bytes | None:
        try:
            return (self._version_dir(model, version) / MANIFEST_NAME).read_bytes()
        except FileNotFoundError:
            return None

    def _download(self, model: str, version: int, paths: list[str], dest_dir: Path) -> None:
        version_dir = self._version_dir(model, version)
        for path in paths:
            target = dest_dir / path
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(version_dir / path, target)
            except FileNotFoundError:
                raise self._missing(model, version, path) from None

    def _delete(self, model: str, version: int) -> None:
        tombstone = self.root / model / TOMBSTONE_DIR / str(version)
        tombstone.parent.mkdir(exist_ok=True)
        tombstone.touch()
        version_dir = self._version_dir(model, version)
        (version_dir / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(version_dir)

    def _try_lock(self, model: str, owner: str, lease_s: float) -> ReleaseLease | None:
        # lease_s is not needed here: the kernel drops a holder's flock when it dies, even by kill -9.
        path = self.root / model / LOCK_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        # The file is never deleted: a waiter that opened it before would lock the deleted file
        # while a newcomer locks a new one at the same path, and both would hold "the" lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        acquired_at = time.time()
        try:
            os.ftruncate(fd, 0)  # only now that it is ours: waiters read its holder from it
            os.pwrite(fd, json.dumps({"owner": owner, "acquired_at": acquired_at}).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return _FileLease(model, owner, acquired_at, fd)

    def _read_lock(self, model: str) -> bytes | None:
        try:
            return (self.root / model / LOCK_NAME).read_bytes()
        except FileNotFoundError:
            return None

    def _unlock(self, lease: _FileLease) -> None:
        try:
            os.ftruncate(lease.fd, 0)  # no waiter should be told of a holder that is gone
        finally:
            os.close(lease.fd)  # closing the file drops the flock


class _FileLease(ReleaseLease):
    def __init__(self, model: str, owner: str, acquired_at: float, fd: int):
        super().__init__(model, owner, acquired_at)
        self.fd = fd  # the open lock file: its flock lasts as long as it stays open


def _copy_hashing(source: Path, target: Path) -> FileEntry:
    """Copy one file, hashing the bytes on the way; never overwrite (mode 'x')."""
    target.parent.mkdir(parents=True, exist_ok=True)
    reader = HashingReader(source)
    try:
        with open(target, "xb") as out:
            shutil.copyfileobj(reader, out, _COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
    finally:
        reader.close()
    return reader.entry()


def _create_once(folder: Path, name: str, data: bytes) -> bool:
    """Write ``folder/name`` whole and only if absent (False if it exists): a temporary file
    linked into place, which is atomic and fails on an existing name."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, folder / name)
    except FileExistsError:
        return False
    finally:
        Path(tmp).unlink(missing_ok=True)
    return True
