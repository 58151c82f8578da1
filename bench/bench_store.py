"""Upload throughput of the model store vs. a plain boto3 ``upload_file`` loop on the same endpoint.

    uv run python -m bench.bench_store [--size-mb 100] [--repeats 5]
    uv run python -m bench.bench_store --endpoint-url http://minio:9000 --bucket scratch

Without ``--endpoint-url`` it starts moto's S3 server in a subprocess on 127.0.0.1 (its own
process, so the server does not compete with the client for the GIL) with dummy credentials;
with it, credentials come from the usual AWS chain and the bucket must exist. Both sides use
the same client settings and TransferConfig; the store also computes every sha256, takes a
version number and writes the manifest. Target: store >= 0.9x plain boto3.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from model_registry.s3 import S3Options, S3Store, make_s3_client

MB = 1024 * 1024


def make_saved_model_like(root: Path, size_mb: float) -> Path:
    """The shape of a real export: one big variables shard and a few small files."""
    rng = random.Random(7)
    small = {
        "saved_model.pb": 1 * MB,
        "variables/variables.index": 64 * 1024,
        "fingerprint.pb": 56,
        "assets/vocab.txt": 32 * 1024,
    }
    sizes = small | {"variables/variables.data-00000-of-00001": int(size_mb * MB) - sum(small.values())}
    for name, size in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(rng.randbytes(size))
    return root


def plain_boto3_upload(client, bucket: str, prefix: str, folder: Path, options: S3Options) -> None:
    config = options.transfer_config()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}", Config=config)


def delete_prefix(client, bucket: str, prefix: str) -> None:
    """Free the server's memory between runs; only what this benchmark wrote."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


@contextmanager
def moto_subprocess():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def bench(endpoint_url: str, bucket: str, size_mb: float, repeats: int) -> float:
    options = S3Options()
    client = make_s3_client(endpoint_url, options)
    store = S3Store(bucket, "bench-store", endpoint_url=endpoint_url, options=options)
    with tempfile.TemporaryDirectory(prefix="railyard-bench-") as scratch:
        folder = make_saved_model_like(Path(scratch) / "export", size_mb)
        files = [p for p in folder.rglob("*") if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        plain_boto3_upload(client, bucket, "bench-warmup", folder / "variables", options)  # connections, caches
        delete_prefix(client, bucket, "bench-warmup/")

        plain, stored = [], []
        for run in range(repeats):
            sides = [("plain", plain), ("store", stored)]
            for side, times in sides if run % 2 == 0 else sides[::-1]:  # alternate who goes first
                start = time.perf_counter()
                if side == "plain":
                    plain_boto3_upload(client, bucket, "bench-plain", folder, options)
                else:
                    metadata = {"data_fingerprint": uuid.uuid4().hex, "code_version": "bench"}
                    store.publish("benchmodel", folder, metadata=metadata)
                times.append(time.perf_counter() - start)
                delete_prefix(client, bucket, "bench-plain/" if side == "plain" else "bench-store/")

    # Each run pairs the two sides back to back, so the load of other processes hits both alike.
    ratio = statistics.median(p / s for p, s in zip(plain, stored))
    print(f"folder: {total / MB:.1f} MB in {len(files)} files; endpoint {endpoint_url}; {repeats} runs each")
    for label, times in (("plain boto3 upload_file loop", plain), ("model store publish (sha256)", stored)):
        median = statistics.median(times)
        runs = ", ".join(f"{t:.2f}" for t in times)
        print(f"  {label:30s} median {median:5.2f} s  {total / MB / median:6.1f} MB/s   runs: {runs}")
    print(
        f"  throughput ratio store/plain: {ratio:.2f}x median of paired runs, "
        f"{min(plain) / min(stored):.2f}x best of each (target >= 0.90x)"
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--endpoint-url", help="an existing S3 endpoint; default: start moto in a subprocess")
    parser.add_argument("--bucket", help="an existing bucket (with --endpoint-url)")
    args = parser.parse_args()
    if args.endpoint_url:
        if not args.bucket:
            parser.error("--endpoint-url needs --bucket")
        bench(args.endpoint_url, args.bucket, args.size_mb, args.repeats)
        return
    with moto_subprocess() as endpoint_url:
        bucket = f"railyard-bench-{uuid.uuid4().hex[:8]}"
        make_s3_client(endpoint_url, S3Options()).create_bucket(Bucket=bucket)
        bench(endpoint_url, bucket, args.size_mb, args.repeats)


if __name__ == "__main__":
    main()
