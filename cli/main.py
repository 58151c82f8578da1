"""The ``railyard`` command line: the top of the layering, it drives flows, tasks and infra.

The commands live by domain (pipeline, release, serving, online features, platform: one module
each, ``cli/*_commands.py``) and are merged here into one flat ``railyard`` command, grouped by
domain in ``--help``.

Heavy libraries (TensorFlow, Great Expectations, MLflow, Prefect) are imported inside the
commands that need them, so ``railyard --help`` answers at once. An error Railyard raises on
purpose ends the command with one ``error:`` line, the next step, and the error's exit code
(2: refused, nothing changed; 1: something did not answer or broke), never a traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from cli import online_commands, pipeline_commands, platform_commands, release_commands, serving_commands
from cli.common import DEBUG_FLAG, OPTIONS
from railyard.errors import RailyardError

app = typer.Typer(
    name="railyard",
    help="Railyard: daily TensorFlow retraining shipped safely to TensorFlow Serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for domain in (pipeline_commands, release_commands, serving_commands, online_commands, platform_commands):
    app.add_typer(domain.app)  # no name: the commands stay `railyard approve`, not `railyard release approve`


@app.callback()
def options(
    debug: Annotated[
        bool, typer.Option(DEBUG_FLAG, help="Show the traceback of an error, and TensorFlow's own log lines.")
    ] = False,
) -> None:
    """Options that apply to every command (give them before the command)."""
    OPTIONS.update(debug=debug, run_log=None)


def main(args: list[str] | None = None) -> None:
    """The console script: a failure is one ``error:`` line and a ``next:`` line, exit code 2 when
    Railyard refused (nothing changed) and 1 otherwise; ``--debug`` adds the traceback."""
    args = sys.argv[1:] if args is None else args
    debug = DEBUG_FLAG in args
    try:
        app(args=args, prog_name="railyard")  # usage errors and exits: click's own sys.exit
    except RailyardError as error:
        _report(str(error), error.next_step, debug)
        sys.exit(error.exit_code)
    except Exception as error:  # noqa: BLE001 - anything else is still one sentence, not a traceback
        _report(*_unexpected(error), debug)
        sys.exit(1)


def _unexpected(error: Exception) -> tuple[str, str]:
    """An error Railyard did not raise on purpose, on one line, and the next step, naming the
    cause where the machine shows it: a locked MLflow database, or a full disk under one of the
    files Railyard's state lives in (a full disk often surfaces as an error of Prefect's API)."""
    from railyard.fsutil import FULL_BELOW_BYTES, free_bytes

    lines = [line for line in str(error).splitlines() if line.strip()]
    cause = f"{type(error).__name__}: {lines[0] if lines else ''}"
    files = _state_files()
    database = files.get("MLflow's database")
    if database is not None and "database is locked" in str(error):
        return (
            f"MLflow's database {database} is locked by another process ({cause})",
            f"a process holds a lock on {database} (`fuser {database}` names it): let it finish or stop it, "
            "then run again",
        )
    for what, path in files.items():
        if (free := free_bytes(path)) < FULL_BELOW_BYTES:
            return (
                f"no space left on the disk of {what} {path} ({free:,} bytes free): {cause}",
                "free space on that disk (or move RAILYARD_HOME to a larger one), then run again: the next run "
                "concludes what this one left unfinished",
            )
    return cause, f"run again with {DEBUG_FLAG} for the traceback"


def _state_files() -> dict[str, Path]:
    """Where Railyard's state lives on this machine, by what it is (empty if the settings do not load)."""
    from railyard.settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError:
        return {}
    files = {}
    if "PREFECT_API_URL" not in os.environ and "PREFECT_HOME" in os.environ:  # the embedded Prefect server
        files["Prefect's database"] = Path(os.environ["PREFECT_HOME"]) / "prefect.db"
    if settings.resolved_tracking_uri.startswith("sqlite:///"):
        files["MLflow's database"] = Path(settings.resolved_tracking_uri.removeprefix("sqlite:///"))
    return files | {"RAILYARD_HOME": settings.home}


def _report(message: str, next_step: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    if OPTIONS.get("run_log"):  # a run that failed: its log file holds the whole story
        next_step = f"{next_step} (the run's full log: {OPTIONS['run_log']})"
    # One write: another process sharing stderr (Prefect's temporary server) never lands between them.
    typer.echo(typer.style(f"error: {message}", fg=typer.colors.RED) + f"\nnext: {next_step}", err=True)
