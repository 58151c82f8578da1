"""Versioned model store: local folder or S3, laid out as TF Serving expects (see store.py)."""

from model_registry.factory import open_store
from model_registry.manifest import FileEntry, Manifest
from model_registry.store import (
    IntegrityError,
    InvalidStoreURI,
    LockLostError,
    LockTimeoutError,
    ModelStore,
    ProtectedVersionError,
    PublishedVersion,
    ReleaseLease,
    StoreError,
    VersionConflictError,
    VersionNotFoundError,
)

__all__ = [
    "FileEntry",
    "IntegrityError",
    "InvalidStoreURI",
    "LockLostError",
    "LockTimeoutError",
    "Manifest",
    "ModelStore",
    "ProtectedVersionError",
    "PublishedVersion",
    "ReleaseLease",
    "StoreError",
    "VersionConflictError",
    "VersionNotFoundError",
    "open_store",
]
