"""The authenticating proxy (infra/platform/proxy.py) as a real process in front of an upstream,
and calls through it with a user's credential."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.platform import service
from tests.support import REPO_ROOT


@contextmanager
def running_proxy(home: Path, upstream: str, trusted: str = "") -> Iterator[str]:
    """The proxy for ``home``'s users in front of ``upstream`` (no ``/api``); yields its URL."""
    port = service.free_port()
    log = Path(home) / "proxy.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.platform.proxy", str(home), upstream, str(port), trusted],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        service.wait_started(
            process,
            lambda: True if service.http_answers(url + "/") else None,
            timeout_s=60,
            exited=lambda child: RuntimeError(f"the proxy exited: {log.read_text()[-2000:]}"),
            timed_out=lambda: TimeoutError("the proxy did not answer"),
        )
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def credential(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def call(method: str, url: str, body=None, *, auth: str | None = None, headers: dict | None = None):
    """(status, decoded JSON or text) of a call; an HTTP error status is an answer too."""
    request = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"} | ({"Authorization": auth} if auth else {}) | (headers or {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            status, raw = answer.status, answer.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")
