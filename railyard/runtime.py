"""The process environment every Railyard entry point prepares before heavy imports."""

from __future__ import annotations

import os
from pathlib import Path


def prepare_environment(home: Path) -> None:
    """Quiet, offline-friendly defaults; must run before Prefect or TensorFlow is imported.

    Prefect's own state goes under RAILYARD_HOME too (a separate world per home), unless the user
    points Prefect somewhere (PREFECT_HOME or PREFECT_API_URL).
    """
    if "PREFECT_HOME" not in os.environ and "PREFECT_API_URL" not in os.environ:
        os.environ["PREFECT_HOME"] = str(home / "prefect")
    # Prefect and Great Expectations write scratch files under TMPDIR.
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TMPDIR", str(tmp))
    defaults = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # telemetry fails without internet
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # first start migrates the DB
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
