"""The manifest of a store version (``railyard.json``) and the file bookkeeping around it.

Pure logic, no I/O against a store: both backends and the tests use it. Problems raise
``ValueError``; the store turns them into its own errors with the version's location.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_NAME = "railyard.json"
CLAIM_NAME = "railyard.claim.json"  # S3 only: who took a version number (see s3.py)
MANIFEST_FORMAT = 1
SAVED_MODEL_FILE = "saved_model.pb"
# Keys the store writes itself; metadata may not set them.
STORE_KEYS = frozenset({"format", "model", "version", "created_at", "files", "empty_dirs"})
# What makes two publications "the same model" (re-publishing it returns the existing version).
IDENTITY_KEYS = ("data_fingerprint", "code_version")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    model: str
    version: int
    created_at: str
    files: Mapping[str, FileEntry]
    metadata: Mapping[str, Any]  # mlflow_run_id, metrics, data_fingerprint, code_version, ...
    empty_dirs: tuple[str, ...] = ()

    @property
    def data_fingerprint(self) -> str:
        return self.metadata["data_fingerprint"]

    @property
    def code_version(self) -> str:
        return self.metadata["code_version"]

    @property
    def mlflow_run_id(self) -> str | None:
        return self.metadata.get("mlflow_run_id")

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.metadata.get("metrics") or {}

    @property
    def identity(self) -> tuple[str, str]:
        return self.data_fingerprint, self.code_version

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files.values())

    @property
    def checksum(self) -> str:
        """sha256 of the manifest document: one value that pins every file of the version."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "model": self.model,
            "version": self.version,
            "created_at": self.created_at,
            **self.metadata,
            "files": {path: {"sha256": e.sha256, "size": e.size} for path, e in sorted(self.files.items())},
            "empty_dirs": sorted(self.empty_dirs),
        }
        return (json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"not valid JSON ({error})") from None
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {document.get('format')!r} (expected {MANIFEST_FORMAT})")
        missing = sorted({"model", "version", "created_at", "files", *IDENTITY_KEYS} - document.keys())
        if missing:
            raise ValueError(f"missing keys: {', '.join(missing)}")
        files = document["files"]
        if not isinstance(files, dict) or SAVED_MODEL_FILE not in files:
            raise ValueError(f"'files' must be an object listing at least {SAVED_MODEL_FILE}")
        return cls(
            model=document["model"],
            version=document["version"],
            created_at=document["created_at"],
            files={check_relative_path(path): _file_entry(path, entry) for path, entry in files.items()},
            metadata={key: value for key, value in document.items() if key not in STORE_KEYS},
            empty_dirs=tuple(check_relative_path(path) for path in document.get("empty_dirs", [])),
        )


def _file_entry(path: str, entry: Any) -> FileEntry:
    if not isinstance(entry, dict):
        raise ValueError(f"entry for {path!r} is not an object")
    sha, size = entry.get("sha256"), entry.get("size")
    if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
        raise ValueError(f"entry for {path!r} has no valid sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError(f"entry for {path!r} has no valid size")
    return FileEntry(sha, size)


def check_relative_path(path: str) -> str:
    """A file path inside a version folder: relative, '/'-separated, no '.', '..' or empty parts."""
    parts = path.split("/")
    if not path or "\\" in path or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"unsafe path {path!r} in a version folder")
    return path


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Validate publisher metadata: JSON-serializable, identity keys present, no store-owned keys."""
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping, not {type(metadata).__name__}")
    clashing = sorted(STORE_KEYS & metadata.keys())
    if clashing:
        raise ValueError(f"metadata may not set {', '.join(clashing)}: the store writes those itself")
    for key in IDENTITY_KEYS:
        value = metadata.get(key)
        if not isinstance(value, str) or not value:
            raise ValueError(f"metadata[{key!r}] must be a non-empty string, got {value!r}")
    for key, value in metadata.items():
        try:
            json.dumps(value, allow_nan=False)  # NaN/inf are not valid JSON
        except (TypeError, ValueError) as error:
            raise ValueError(f"metadata[{key!r}] is not plain JSON: {error}") from None
    return json.loads(json.dumps(dict(metadata)))


@dataclass(frozen=True)
class SourceTree:
    """The files of a SavedModel folder to publish, as (path inside the version, local path)."""

    files: tuple[tuple[str, Path], ...]
    empty_dirs: tuple[str, ...] = ()


def collect_source(source_dir: Path) -> SourceTree:
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise ValueError(f"source folder {source_dir} does not exist or is not a folder")
    if not (source_dir / SAVED_MODEL_FILE).is_file():
        raise ValueError(f"{source_dir} is not a SavedModel folder: {SAVED_MODEL_FILE} is missing")
    for reserved in (MANIFEST_NAME, CLAIM_NAME):
        if (source_dir / reserved).exists():
            raise ValueError(f"{source_dir} contains {reserved}, a name the store reserves for itself")
    files, empty_dirs = [], []
    for folder, dir_names, file_names in os.walk(source_dir, followlinks=True):
        dir_names.sort()
        relative = Path(folder).relative_to(source_dir).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        if prefix and not dir_names and not file_names:
            empty_dirs.append(relative)  # e.g. an empty assets/: S3 cannot hold it, the manifest can
        files.extend((check_relative_path(prefix + name), Path(folder) / name) for name in sorted(file_names))
    return SourceTree(tuple(files), tuple(empty_dirs))


class HashingReader:
    """A forward-only reader of one file that hashes and counts exactly the bytes handed out.

    Deliberately not seekable: boto3's transfer manager then reads every byte once, in order,
    and keeps each part in memory for retries, so the digest always matches what was sent and
    the file is read once. Opens lazily and closes at end of file, so many queued uploads do
    not hold many open files.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = None
        self._digest = hashlib.sha256()
        self._size = 0
        self._done = False

    def read(self, amount: int = -1) -> bytes:
        if self._done:
            return b""
        if self._handle is None:
            self._handle = open(self.path, "rb")
        data = self._handle.read(amount)
        self._digest.update(data)
        self._size += len(data)
        if not data:
            self._done = True
            self.close()
        return data

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def entry(self) -> FileEntry:
        if not self._done:
            raise RuntimeError(f"{self.path} was not read to the end")
        return FileEntry(self._digest.hexdigest(), self._size)
