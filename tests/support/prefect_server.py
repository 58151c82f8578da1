"""A real Prefect API server (``prefect server start``, SQLite) on 127.0.0.1 for one test session
(``prefect_server``; ``prefect_ui_server`` serves its UI too, for browser tests).

Registered for every test module by tests/conftest.py. The fixtures yield the
API URL; processes started with ``PREFECT_API_URL`` set to it (the CLI, workers) talk to it.
In-process code keeps the settings it imported with, so drive the server from subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.s3_server import free_port

STARTUP_TIMEOUT_S = 180  # a fresh database migrates first (~20-30 s on these machines)
# A deployment run's concurrency lease, shortened to the server's minimum: a design that held
# a lease across a long wait would lose it within the tests' time. The server looks for expired
# leases every REAPER_S (15 s by default), so a lease is gone LEASE_S + REAPER_S after its last renewal.
LEASE_S = 30
REAPER_S = 2


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serving(tmp_path_factory.mktemp("prefect-server"), ui=False) as api_url:
        yield api_url


@pytest.fixture(scope="session")
def prefect_ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prefect server with its UI, on a free port (not 4200), started as the README says:
    with PREFECT_SERVER_UI_API_URL, so that the UI calls this server's API. Yields the API URL
    (the UI is at the same address without ``/api``)."""
    with _serving(tmp_path_factory.mktemp("prefect-ui-server"), ui=True) as api_url:
        yield api_url


@contextmanager
def _serving(home: Path, *, ui: bool) -> Iterator[str]:
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = os.environ | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_CONCURRENCY_INITIAL_DEPLOYMENT_LEASE_DURATION": str(LEASE_S),
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": str(REAPER_S),
    }
    if ui:
        env["PREFECT_SERVER_UI_API_URL"] = api_url
    env.pop("PREFECT_API_URL", None)
    log_path = Path(home) / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_healthy(api_url, process, log_path)
        yield api_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(api_url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server not healthy after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
