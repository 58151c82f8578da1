"""Versioned model store: local folder or S3, laid out as TF Serving expects (see store.py)."""

from model_registry.manifest import FileEntry, Manifest
from model_registry.store import (
    IntegrityError,
    ModelStore,
    ProtectedVersionError,
    PublishedVersion,
    StoreError,
    VersionConflictError,
    VersionNotFoundError,
    open_store,
)

__all__ = [
    "FileEntry",
    "IntegrityError",
    "Manifest",
    "ModelStore",
    "ProtectedVersionError",
    "PublishedVersion",
    "StoreError",
    "VersionConflictError",
    "VersionNotFoundError",
    "open_store",
]
