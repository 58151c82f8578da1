"""The MLflow UI (``mlflow ui``, the command the README gives) over a Railyard home's tracking
database, on a free loopback port, for the block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.s3_server import free_port

STARTUP_TIMEOUT_S = 120


@contextmanager
def mlflow_ui(tracking_uri: str, log_dir: Path) -> Iterator[str]:
    """Yields the UI's base URL."""
    port = free_port()
    # Two processes instead of ten (STACK-NOTES): no job runner.
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = log_dir / "mlflow-ui.log"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its server processes are stopped with it, as a group
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert process.poll() is None, f"mlflow ui exited:\n{log_path.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"mlflow ui not up:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
