import os
import tempfile
from pathlib import Path

import pytest

# Quiet, offline-friendly defaults for every test process.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# One Prefect world per test session, never the developer's ~/.prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="railyard-prefect-")
os.environ.pop("PREFECT_API_URL", None)


@pytest.fixture
def railyard_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fully separate Railyard world for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RAILYARD_HOME", str(home))
    return home
