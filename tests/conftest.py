import os
from pathlib import Path

import pytest

# Quiet, offline-friendly defaults for every test process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def railyard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fully separate Railyard world for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RAILYARD_HOME", str(home))
    return home
