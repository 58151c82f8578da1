"""The process environment every Railyard entry point prepares before heavy imports."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# TensorFlow's C++ log level (TF_CPP_MIN_LOG_LEVEL): 3 shows none of its info, warning or error
# lines (what goes wrong reaches Python as an exception); 0 shows them all.
DEFAULT_TF_LOG_LEVEL = 3
TF_LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def prepare_environment(home: Path, tf_log_level: int = DEFAULT_TF_LOG_LEVEL) -> None:
    """Quiet, offline-friendly defaults; must run before Prefect or TensorFlow is imported.

    Prefect's own state goes under RAILYARD_HOME too (a separate world per home), unless the user
    points Prefect somewhere (PREFECT_HOME or PREFECT_API_URL). The processes this one starts
    (flow runs, the local server) inherit the environment, TensorFlow's log level included.
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
        "GIT_PYTHON_REFRESH": "quiet",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    quiet_tensorflow(tf_log_level)


def quiet_tensorflow(level: int | None = None) -> None:
    """TensorFlow's C++ logging at ``level`` in this process and the ones it starts (None: the
    level a Railyard process that started this one set, else the default); call it before
    TensorFlow is imported.

    TF_CPP_MIN_LOG_LEVEL does not reach the lines TensorFlow's native libraries log while they
    load (absl's "before absl::InitializeLog()" banner, oneDNN, "Could not find cuda drivers":
    tensorflow/tensorflow#100442), so those loads run with stderr captured, and the lines below
    the level are dropped; anything else they write is passed on.
    """
    if level is None:
        level = int(os.environ.get(TF_LOG_LEVEL_VARIABLE) or DEFAULT_TF_LOG_LEVEL)
    os.environ[TF_LOG_LEVEL_VARIABLE] = str(level)
    if not any(isinstance(finder, _QuietTensorFlowLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowLoads())


# absl's line format: severity letter, MMDD, time (before its initialisation: 00:00:<epoch s>),
# thread id, file:line] message.
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^ \]]+:\d+\] ")
_ABSL_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_SEVERITIES = "IWEF"


def tensorflow_noise(line: str, level: int) -> bool:
    """Whether ``line`` is a native TensorFlow log line that ``level`` hides."""
    if line.strip() == _ABSL_BANNER:
        return level > 0
    found = _ABSL_LINE.match(line)
    return found is not None and _SEVERITIES.index(found.group(1)) < level


class _QuietTensorFlowLoads(importlib.abc.MetaPathFinder):
    """Finds TensorFlow's extension modules and loads them through ``_QuietExtensionLoader``."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("tensorflow."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.ExtensionFileLoader:
            return None  # the usual finders take it
        spec.loader = _QuietExtensionLoader(spec.loader.name, spec.loader.path)
        return spec


class _QuietExtensionLoader(importlib.machinery.ExtensionFileLoader):
    def create_module(self, spec):  # the library is loaded (and logs) here
        with _stderr_without_tensorflow_noise():
            return super().create_module(spec)


@contextmanager
def _stderr_without_tensorflow_noise() -> Iterator[None]:
    level = int(os.environ.get(TF_LOG_LEVEL_VARIABLE) or 0)
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:  # a file, not a pipe: nothing blocks however much is written
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not tensorflow_noise(line, level))
            if kept:
                os.write(2, kept.encode())
