"""Small file helpers shared by the store, the exporter, the serving side and the CLI."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

_CHUNK = 1 << 20
# Less free space than this and a disk is full for Railyard: its databases and runs cannot write.
FULL_BELOW_BYTES = 1 << 20


def free_bytes(path: Path) -> int:
    """Free space on the disk that holds ``path`` (or would hold it: its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def prune_oldest(folder: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` most recently modified sub-folders of ``folder``; the removed ones."""
    if not Path(folder).is_dir():
        return []
    children = sorted(
        (child for child in Path(folder).iterdir() if child.is_dir()), key=lambda child: child.stat().st_mtime
    )
    doomed = children[: max(len(children) - keep, 0)]
    for child in doomed:
        shutil.rmtree(child, ignore_errors=True)
    return doomed


class ExposedSecretFile(Exception):
    """A secret's file is readable by others: whoever reads it holds the secret."""


def owner_only_secret(path: Path) -> str:
    """A random secret kept in ``path``: created on first use with owner-only permissions (never
    readable by others, not even for a moment), read back later. An existing file that others
    may read raises ExposedSecretFile naming its mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ExposedSecretFile(f"{path} is readable by others (mode {mode:o})") from None
        return path.read_text().strip()
    secret = secrets.token_urlsafe(32)
    with os.fdopen(descriptor, "w") as out:
        out.write(secret)
    return secret
