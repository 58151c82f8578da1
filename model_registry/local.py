"""The local-folder backend (the embedded default): the same layout and race rules as S3.

Exclusivity comes from the file system: ``mkdir`` takes a version number, files are created
with ``O_EXCL``, and the manifest is written to a temp file and hard-linked into place, which
fails if it exists — the local twin of S3's ``If-None-Match: *``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from model_registry.manifest import MANIFEST_NAME, FileEntry, HashingReader, SourceTree
from model_registry.store import TOMBSTONE_DIR, ModelStore, VersionScan, parse_version_name

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
        if tombstones.is_dir():
            taken.update(v for child in tombstones.iterdir() if (v := parse_version_name(child.name)) is not None)
        return VersionScan(frozenset(taken), frozenset(complete))

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
        version_dir = self._version_dir(model, version)
        fd, tmp = tempfile.mkstemp(dir=version_dir, prefix=f".{MANIFEST_NAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(tmp, version_dir / MANIFEST_NAME)  # atomic, and fails if the manifest exists
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

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
