"""Model store helpers shared by the store and lock suites: a store of either backend, fake
SavedModel folders, direct access to what a backend holds, and injected S3 request failures."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError

from model_registry import open_store
from model_registry.local import LocalStore
from model_registry.s3 import S3Options, S3Store

MODEL = "recmodel"
# Small retries and timeouts keep the fault tests quick and bounded.
FAST = S3Options(max_attempts=3, connect_timeout=1, read_timeout=5)
SAVED_MODEL_FILES = (
    "saved_model.pb",
    "fingerprint.pb",
    "variables/variables.data-00000-of-00001",
    "variables/variables.index",
    "assets.extra/tf_serving_warmup_requests",
    "assets.extra/empty_file",
)


def make_saved_model(path: Path, seed: int, *, variables_size: int = 4096) -> Path:
    """A SavedModel-like folder (right names, random bytes) with an empty assets/."""
    rng = random.Random(seed)
    sizes = {"variables/variables.data-00000-of-00001": variables_size, "assets.extra/empty_file": 0}
    for name in SAVED_MODEL_FILES:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(rng.randbytes(sizes.get(name, 200)))
    (path / "assets").mkdir()
    return path


def metadata(n: int, **changes) -> dict:
    return {
        "mlflow_run_id": f"run-{n}",
        "metrics": {"auc": 0.8 + n / 100, "logloss": 0.5},
        "data_fingerprint": f"fingerprint-{n}",
        "code_version": "commit-abc",
    } | changes


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    bucket = request.getfixturevalue("s3_bucket")
    return open_store(bucket.uri("models"), s3_endpoint_url=bucket.endpoint_url, s3_options=FAST)


def reopen(store):
    """A second handle on the same store, as another process would have."""
    return open_store(store.uri, s3_endpoint_url=getattr(store, "endpoint_url", None), s3_options=FAST)


# Direct access to what a backend holds, bypassing the store: its layout and deliberate damage.


def stored_paths(store, model: str = MODEL) -> set[str]:
    if isinstance(store, LocalStore):
        root = store.root / model
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    prefix = f"{store.prefix}/{model}/"
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
    return {item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])}


def read_stored(store, version: int, path: str) -> bytes:
    if isinstance(store, LocalStore):
        return (store.root / MODEL / str(version) / path).read_bytes()
    key = f"{store.prefix}/{MODEL}/{version}/{path}"
    return store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()


def write_stored(store, version: int, path: str, data: bytes | None) -> None:
    """Overwrite a stored file, or delete it with data=None."""
    if isinstance(store, LocalStore):
        target = store.root / MODEL / str(version) / path
        target.unlink() if data is None else target.write_bytes(data)
        return
    key = f"{store.prefix}/{MODEL}/{version}/{path}"
    if data is None:
        store.client.delete_object(Bucket=store.bucket, Key=key)
    else:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=data)


def fail_requests(store: S3Store, operation: str, failures: int, failure: str) -> list[str]:
    """Make the next `failures` requests of one operation fail the way a flaky endpoint does."""
    seen = []

    def before_send(request, **_):
        if len(seen) >= failures:
            return None
        seen.append(failure)
        if failure == "connection_reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        status, code = {"server_error": (500, "InternalError"), "throttled": (503, "SlowDown")}[failure]
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        return AWSResponse(request.url, status, {}, _Raw(body))

    store.client.meta.events.register(f"before-send.s3.{operation}", before_send)
    return seen


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body
