"""The S3 backend: AWS, MinIO or any S3-compatible endpoint, through boto3.

- A version number is taken by creating ``<version>/railyard.claim.json`` with
  ``If-None-Match: *`` before any file is written, so racing publishers never write into the
  same version; the manifest is created the same way, last.
- The release lock is a lease object ``<model>/.railyard-lock`` created with ``If-None-Match:
  *``, renewed by its holder with ``If-Match`` while held, and taken over with ``If-Match`` by
  a waiter once it has expired (the holder died): S3 decides every race between them.
- Files go through one boto3 transfer manager: parallel across files, multipart for large
  ones, each file read once while its sha256 is computed (``HashingReader``).
- Every request is retried by botocore's "standard" mode on throttling, 5xx and connection
  errors, with exponential backoff and jitter; after the last try a ``StoreError`` says what
  failed. Credentials come from boto3's usual chain (env, profile, instance role) and are
  never read, logged or printed here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.exceptions import RetriesExceededError

from model_registry.manifest import CLAIM_NAME, MANIFEST_NAME, FileEntry, HashingReader, SourceTree
from model_registry.store import (
    HISTORY_DIR,
    LOCK_NAME,
    TOMBSTONE_DIR,
    InvalidStoreURI,
    ModelStore,
    ReleaseLease,
    StoreError,
    VersionScan,
    parse_lock_record,
    parse_version_name,
    utc_timestamp,
)

logger = logging.getLogger("railyard.store")

MB = 1024 * 1024
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# S3 answers 412 when If-None-Match fails, 409 when another conditional write is in flight.
_ALREADY_EXISTS = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}  # also what If-Match meets when the object is gone


@dataclass(frozen=True)
class S3Options:
    max_attempts: int = 5  # per request, first try included
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    multipart_threshold: int = 8 * MB
    multipart_chunksize: int = 8 * MB
    max_concurrency: int = 10

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.max_concurrency,
            preferred_transfer_client="classic",  # HashingReader relies on the classic manager
        )


def make_s3_client(endpoint_url: str | None, options: S3Options) -> Any:
    config = Config(
        retries={"mode": "standard", "total_max_attempts": options.max_attempts},
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=options.max_concurrency + 2,
        # Custom endpoints (MinIO, moto) rarely resolve bucket.host names: use path-style URLs.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)


class S3Store(ModelStore):
    def __init__(
        self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None, options: S3Options | None = None
    ):
        if not _BUCKET_NAME.fullmatch(bucket or ""):
            raise InvalidStoreURI(f"invalid S3 bucket name {bucket!r} in the store URI")
        parts = [part for part in prefix.split("/") if part]
        if any(part in (".", "..") for part in parts):
            raise InvalidStoreURI(f"invalid S3 prefix {prefix!r} in the store URI: no '.' or '..' parts")
        self.bucket = bucket
        self.prefix = "/".join(parts)
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.options = options or S3Options()
        self.endpoint_url = endpoint_url
        self.client = make_s3_client(endpoint_url, self.options)

    def version_uri(self, model: str, version: int) -> str:
        return f"s3://{self.bucket}/{self._version_prefix(model, version)}"

    def _model_prefix(self, model: str) -> str:
        return f"{self.prefix}/{model}/" if self.prefix else f"{model}/"

    def _version_prefix(self, model: str, version: int) -> str:
        return f"{self._model_prefix(model)}{version}/"

    def _scan(self, model: str) -> VersionScan:
        prefix = self._model_prefix(model)
        taken, complete, deleted = set(), set(), set()
        for key in self._keys(prefix):
            first, _, rest = key[len(prefix) :].partition("/")
            if first == TOMBSTONE_DIR:
                version = parse_version_name(rest)  # deleted, but the number stays taken
                deleted |= {version} - {None}
            else:
                version = parse_version_name(first)
                if version is not None and rest == MANIFEST_NAME:
                    complete.add(version)
            if version is not None:
                taken.add(version)
        return VersionScan(frozenset(taken), frozenset(complete), frozenset(deleted))

    def _claim(self, model: str, version: int) -> bool:
        claim = {
            "claimed_at": utc_timestamp(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,  # makes our claim recognizable when a retried request lands twice
        }
        return self._put_if_absent(self._version_prefix(model, version) + CLAIM_NAME, json.dumps(claim).encode())

    def _upload(self, model: str, version: int, tree: SourceTree) -> dict[str, FileEntry]:
        prefix = self._version_prefix(model, version)
        readers = {path: HashingReader(source) for path, source in tree.files}
        try:
            with self._transfer_manager() as manager:
                futures = {path: manager.upload(reader, self.bucket, prefix + path) for path, reader in readers.items()}
                for path, future in futures.items():
                    with self._errors(f"upload of {readers[path].path} to s3://{self.bucket}/{prefix}{path}"):
                        future.result()
        finally:
            for reader in readers.values():
                reader.close()
        return {path: reader.entry() for path, reader in readers.items()}

    def _create_manifest(self, model: str, version: int, data: bytes) -> bool:
        return self._put_if_absent(self._version_prefix(model, version) + MANIFEST_NAME, data)

    def history_uri(self, model: str) -> str:
        return f"s3://{self.bucket}/{self._model_prefix(model)}{HISTORY_DIR}/"

    def _append_history(self, model: str, sequence: int, data: bytes) -> bool:
        return self._put_if_absent(f"{self._model_prefix(model)}{HISTORY_DIR}/{sequence:08d}.json", data)

    def _read_history(self, model: str) -> list[bytes]:
        keys = sorted(self._keys(f"{self._model_prefix(model)}{HISTORY_DIR}/"))
        return [data for key in keys if (data := self._get_bytes(key)) is not None]

    def _read_manifest(self, model: str, version: int) -> bytes | None:
        return self._get_bytes(self._version_prefix(model, version) + MANIFEST_NAME)

    def _download(self, model: str, version: int, paths: list[str], dest_dir: Path) -> None:
        prefix = self._version_prefix(model, version)
        with self._transfer_manager() as manager:
            futures = {}
            for path in paths:
                (dest_dir / path).parent.mkdir(parents=True, exist_ok=True)
                futures[path] = manager.download(self.bucket, prefix + path, str(dest_dir / path))
            for path, future in futures.items():
                with self._errors(f"download of s3://{self.bucket}/{prefix}{path}"):
                    try:
                        future.result()
                    except ClientError as error:
                        if _error_code(error) in _NOT_FOUND:
                            raise self._missing(model, version, path) from None
                        raise

    def _delete(self, model: str, version: int) -> None:
        prefix = self._version_prefix(model, version)
        with self._errors(f"deleting s3://{self.bucket}/{prefix}"):
            tombstone = f"{self._model_prefix(model)}{TOMBSTONE_DIR}/{version}"
            self.client.put_object(Bucket=self.bucket, Key=tombstone, Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=prefix + MANIFEST_NAME)
            keys = list(self._keys(prefix))
            for start in range(0, len(keys), 1000):  # the API's batch limit
                batch = [{"Key": key} for key in keys[start : start + 1000]]
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
                if response.get("Errors"):
                    first = response["Errors"][0]
                    raise StoreError(f"could not delete s3://{self.bucket}/{first['Key']}: {first.get('Message')}")

    def _try_lock(self, model: str, owner: str, lease_s: float) -> ReleaseLease | None:
        key = self._model_prefix(model) + LOCK_NAME
        # Wall-clock time: expires_at is compared by other machines, whose clocks are assumed to
        # agree within a small part of lease_s (NTP).
        now = time.time()
        record = {"owner": owner, "token": uuid.uuid4().hex, "acquired_at": now, "expires_at": now + lease_s}
        etag = self._put_conditional(key, json.dumps(record).encode(), IfNoneMatch="*")
        if etag is None:
            found = self._get_object(key)
            held = parse_lock_record(found[0]) if found else None
            now = time.time()
            if held is None or now < held["expires_at"]:
                return None  # held (or released just now: the next try takes it)
            # Expired: take it over. Of racing takers, If-Match lets S3 accept only one.
            record |= {"acquired_at": now, "expires_at": now + lease_s}
            etag = self._put_conditional(key, json.dumps(record).encode(), IfMatch=found[1])
            if etag is None:
                return None
            logger.warning(
                "took over %s's release lock from %s: its lease expired at %s",
                model,
                held["owner"],
                utc_timestamp(held["expires_at"]),
            )
        lease = _S3Lease(model, key, record, etag)
        lease.renewal = threading.Thread(
            target=self._renew, args=(lease, lease_s), name=f"{model} release lock", daemon=True
        )
        lease.renewal.start()
        return lease

    def _renew(self, lease: _S3Lease, lease_s: float) -> None:
        """Push the lease on every lease_s / 3 until released; mark it lost once that cannot work."""
        while not lease.released.wait(lease_s / 3):
            record = lease.record | {"expires_at": time.time() + lease_s}
            try:
                etag = self._put_conditional(lease.key, json.dumps(record).encode(), IfMatch=lease.etag)
            except StoreError as error:
                if time.time() < lease.expires_at:
                    logger.warning("could not renew %s's release lock (trying again): %s", lease.model, error)
                    continue
                lease.lost = f"it expired while renewing it failed: {error}"
            else:
                if etag is not None:
                    lease.record, lease.etag, lease.expires_at = record, etag, record["expires_at"]
                    continue
                lease.lost = "another holder took it over after it had expired"
            logger.error("lost %s's release lock, taken as %s: %s", lease.model, lease.owner, lease.lost)
            return

    def _read_lock(self, model: str) -> bytes | None:
        return self._get_bytes(self._model_prefix(model) + LOCK_NAME)

    def _unlock(self, lease: _S3Lease) -> None:
        lease.released.set()
        lease.renewal.join()
        try:
            with self._errors(f"releasing s3://{self.bucket}/{lease.key}"):
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=lease.key, IfMatch=lease.etag)
                except ClientError as error:
                    if _error_code(error) in _ALREADY_EXISTS:  # 412: it is another holder's now
                        logger.warning("%s's release lock was taken over from %s: leaving it", lease.model, lease.owner)
                    elif _error_code(error) not in _NOT_FOUND:  # 404: a retry of our own delete
                        raise
        except StoreError as error:
            # Not raised: it would hide how the block ended, and the lease runs out by itself.
            logger.error("%s; it stays locked until %s", error, utc_timestamp(lease.expires_at))

    def _keys(self, prefix: str) -> Iterator[str]:
        with self._errors(f"listing s3://{self.bucket}/{prefix}"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from (item["Key"] for item in page.get("Contents", []))

    def _get_bytes(self, key: str) -> bytes | None:
        found = self._get_object(key)
        return found[0] if found else None

    def _get_object(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag, or None."""
        with self._errors(f"reading s3://{self.bucket}/{key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _error_code(error) in _NOT_FOUND:
                    return None
                raise
            return response["Body"].read(), response["ETag"]

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        return self._put_conditional(key, data, IfNoneMatch="*") is not None

    def _put_conditional(self, key: str, data: bytes, **condition: str) -> str | None:
        """Write the object if the condition (IfNoneMatch or IfMatch) holds: its new ETag, else None."""
        with self._errors(f"writing s3://{self.bucket}/{key}"):
            try:
                response = self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=data, ContentType="application/json", **condition
                )
                return response["ETag"]
            except ClientError as error:
                if _error_code(error) not in _ALREADY_EXISTS | _NOT_FOUND:
                    raise
        # If a retry of our own request met the object we had just written, it is still ours.
        found = self._get_object(key)
        return found[1] if found and found[0] == data else None

    def _transfer_manager(self):
        return create_transfer_manager(self.client, self.options.transfer_config())

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn boto's errors (raised after botocore's retries) into one clear StoreError."""
        try:
            yield
        except (BotoCoreError, ClientError, RetriesExceededError) as error:
            raise StoreError(
                f"{action} failed (up to {self.options.max_attempts} attempts per request): {error}"
            ) from error


class _S3Lease(ReleaseLease):
    def __init__(self, model: str, key: str, record: dict, etag: str):
        super().__init__(model, record["owner"], record["acquired_at"], record["expires_at"])
        self.key = key
        self.record = record  # what the lease object holds now, renewals included
        self.etag = etag  # of our latest write: every renewal and the release are conditional on it
        self.released = threading.Event()
        self.renewal: threading.Thread | None = None


def _error_code(error: ClientError) -> str | None:
    return error.response.get("Error", {}).get("Code")
