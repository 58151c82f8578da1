import os
import sys
import tempfile
from pathlib import Path

import pytest

# Assertions in the shared support code are rewritten like the tests' own.
pytest.register_assert_rewrite("tests.support")

# Fixtures that start servers (moto S3, a Prefect server, Valkey) and build stores, for every test module.
pytest_plugins = [
    "tests.support.s3_server",
    "tests.support.prefect_server",
    "tests.support.stores",
    "tests.support.online_store",
    "tests.support.browser",
]

# Quiet, offline-friendly defaults for every test process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# A paused run notices its answer within a second, not Prefect's 10 s (the setting, set short).
os.environ.setdefault("RAILYARD_REVIEW_POLL_S", "1")
# One Prefect world per test session, never the developer's ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="railyard-prefect-")
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def railyard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fully separate Railyard world for one test; the online store a flow starts in it (on a
    free port) is stopped afterwards."""
    from infra.online_store import valkey_process
    from railyard.settings import Settings

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RAILYARD_HOME", str(home))
    monkeypatch.setenv("RAILYARD_LOCAL_ONLINE_STORE_PORT", "0")
    scratch = os.environ.get("TMPDIR")
    yield home
    valkey_process.stop(Settings.model_construct(home=home.resolve()))  # the test may have left a bad setting
    # A command run in this process pointed TMPDIR under this home (railyard/runtime.py): the next
    # test's processes (Chromium's socket among them) must not inherit it.
    if scratch is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = scratch
    tempfile.tempdir = None  # the module caches what it found


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch):
    """A local HTTP endpoint set as RAILYARD_WEBHOOK_URL; yields the list of JSON bodies it got."""
    import json

    from tests.support.local_http import QuietHandler, serve_http

    received: list[dict] = []

    class Capture(QuietHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    with serve_http(Capture) as server:
        monkeypatch.setenv("RAILYARD_WEBHOOK_URL", f"http://127.0.0.1:{server.server_address[1]}/hook")
        yield received


def pytest_sessionfinish(session, exitstatus):
    """Stop Prefect's ephemeral API server while pytest's streams are still open.

    Left to its atexit hook it logs to a stream pytest has already closed.
    """
    server = sys.modules.get("prefect.server.api.server")
    if server is not None:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)  # what is queued reaches the API before it stops
        EventsWorker.drain_all(timeout=10)
        for instance in list(server.SubprocessASGIServer._instances.values()):
            instance.stop()
