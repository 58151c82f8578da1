"""A real S3 API over HTTP on 127.0.0.1 for tests: moto's server, no in-process patching of boto.

Use it with ``from tests.support.s3_server import s3_server, s3_bucket`` in a test module (or list it
in ``pytest_plugins`` of the root conftest). Fixtures:

- ``s3_server``: one ``MotoS3Server`` per test session (``.endpoint_url``).
- ``s3_bucket``: a fresh bucket per test (an ``S3Bucket``), with dummy AWS credentials,
  region and ``RAILYARD_S3_ENDPOINT_URL`` set in the environment (subprocesses inherit them)
  and the developer's own AWS profile kept out of reach.

Tests that stop a server start their own ``MotoS3Server``; all servers of a process share
moto's in-memory state, so a restarted server still holds what was written before.
"""

from __future__ import annotations

import socket
import threading
import uuid
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

__all__ = ["DUMMY_AWS_ENV", "MotoS3Server", "S3Bucket", "free_port", "new_bucket", "s3_bucket", "s3_server"]

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "railyard-test-key-id",
    "AWS_SECRET_ACCESS_KEY": "railyard-test-secret-never-logged",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _AtomicConditionalWrites:
    """WSGI middleware: one conditional request at a time.

    moto checks ``If-None-Match`` / ``If-Match`` and then writes, unlocked, on parallel request
    threads, so two racing creates (or lock takeovers) can both succeed; S3 and MinIO decide them
    atomically. Serializing the (rare, small) conditional requests gives the tests S3's semantics.
    """

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if "HTTP_IF_NONE_MATCH" not in environ and "HTTP_IF_MATCH" not in environ:
            return self.app(environ, start_response)
        with self.lock:
            return list(self.app(environ, start_response))


class MotoS3Server(ThreadedMotoServer):
    """moto's threaded server on 127.0.0.1 that can be stopped for real and started again."""

    def __init__(self, port: int | None = None):
        super().__init__(ip_address="127.0.0.1", port=port or free_port(), verbose=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        super().start()
        self._server.app = _AtomicConditionalWrites(self._server.app)

    def stop(self) -> None:
        super().stop()
        # moto's stop() leaves the socket listening: clients would hang instead of being refused.
        self._server.server_close()


@dataclass(frozen=True)
class S3Bucket:
    name: str
    endpoint_url: str

    def uri(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}" if prefix else f"s3://{self.name}"

    def client(self):
        """A plain boto3 client on the test endpoint, for looking at or damaging objects directly."""
        return boto3.session.Session(
            aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=self.endpoint_url, config=Config(s3={"addressing_style": "path"}))


def new_bucket(endpoint_url: str) -> S3Bucket:
    bucket = S3Bucket(f"railyard-test-{uuid.uuid4().hex[:12]}", endpoint_url)
    bucket.client().create_bucket(Bucket=bucket.name)
    return bucket


@pytest.fixture(scope="session")
def s3_server():
    server = MotoS3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, tmp_path) -> S3Bucket:
    for name, value in DUMMY_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    # No ~/.aws config or credentials of the developer may leak into a test.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("RAILYARD_S3_ENDPOINT_URL", s3_server.endpoint_url)
    return new_bucket(s3_server.endpoint_url)
