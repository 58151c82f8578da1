"""A fresh MLflow database opened by several processes at once (a run creating it while a
reviewer's ``railyard status`` reads it): each one works, none sees a half-made schema."""

import subprocess
import sys

OPEN_AND_READ = """
import sys
from railyard.settings import Settings
from railyard import tracking
from release.state import registry

settings = Settings()
tracking.ensure_experiment(settings) if sys.argv[1] == "tracking" else registry(settings).client.search_registered_models()
"""


def test_processes_opening_one_new_tracking_database_together_all_work(railyard_home):
    roles = ["tracking", "registry"] * 3
    started = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_READ, role], stderr=subprocess.PIPE, text=True)
        for role in roles
    ]
    errors = [process.communicate(timeout=300)[1] for process in started]
    failures = [err[-1500:] for process, err in zip(started, errors, strict=True) if process.returncode]
    assert failures == []
    assert (railyard_home / "mlflow.db").exists()
