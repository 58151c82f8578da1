"""What every command shares: the global options, the settings as a command loads them, the way a
command ends with an error, and the few small formatters more than one domain uses."""

from __future__ import annotations

import logging
import os
from typing import NoReturn

from railyard.errors import RailyardError, Refused
from railyard.runtime import prepare_environment

DEBUG_FLAG = "--debug"
# This invocation's global options (set by ``options`` before the command runs), and the log
# file of a run it started.
OPTIONS: dict = {"debug": False, "run_log": None}


def fail(message: str, next_step: str, code: int = 1) -> NoReturn:
    """End the command: ``code`` 2 when Refused (nothing changed), 1 otherwise; ``main`` prints
    the ``error:`` and ``next:`` lines."""
    error = (Refused if code == 2 else RailyardError)(message)
    error.next_step = next_step
    raise error


def command_settings(*, store: bool = False):
    """The settings (a bad value refused, naming its variable); with ``store``, for a command that
    uses the model store, a store URI that names no store is refused too, before anything runs."""
    from railyard.settings import load_settings

    settings = load_settings()
    if "PREFECT_API_URL" not in os.environ and settings.platform_prefect_api_url:
        # The home's runs live in its platform's Prefect (`railyard up`), not a temporary one.
        os.environ["PREFECT_API_URL"] = settings.platform_prefect_api_url
    if store:
        from model_registry import open_store

        open_store(settings.resolved_store_uri, s3_endpoint_url=settings.s3_endpoint_url)  # opens nothing remote
    # --debug: TensorFlow's own log lines too, here and in the processes this one starts.
    prepare_environment(settings.home, 0 if OPTIONS["debug"] else settings.tf_log_level)
    return settings


def with_name(text: str, named: str | None) -> str:
    """The text, with a name the user gave for the record (the recorded actor is the OS user)."""
    from release.decision import with_name as noted

    return noted(text, named, os_user())


def os_user() -> str:
    import getpass

    return getpass.getuser()


def utc(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def running_serving(settings):
    """The serving the home's settings name, or the command ends: it needs a server that runs."""
    from infra.rollout.deploy import resolve_target

    target = resolve_target(settings)
    if target is None:
        fail("serving is not running", "start it with `railyard serve --background` (or run `railyard run`)")
    return target


def log_to_terminal() -> None:
    """A long-running service's log lines on stderr, with their time and source."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
