"""Code the test suites share: servers started for tests, fixtures, fault injection."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
