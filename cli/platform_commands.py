"""The whole platform on this machine: `railyard up`, `down`, `ps` (the logic is in cli/platform_up.py)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.common import command_settings

PANEL = "Platform"
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def up(as_json: Annotated[bool, typer.Option("--json", help="What runs, as one JSON list.")] = False) -> None:
    """Start every service under RAILYARD_HOME, supervised: PostgreSQL, Prefect (server, UI,
    deployments, a worker), MLflow (tracking, UI), serving, the online store, the ingester, the
    ranking service. Each on 127.0.0.1 on a port the home records; `railyard down` stops them."""
    from cli import platform_up
    from railyard.settings import load_settings

    platform_up.check_writable(load_settings())  # before anything is written under the home
    started, rows = platform_up.up(command_settings())
    if as_json:
        print(json.dumps(rows), flush=True)
        return
    typer.echo("the platform is up:" if started else "the platform was already up:")
    for line in platform_up.table(rows):
        typer.echo(line)


@app.command(rich_help_panel=PANEL)
def down() -> None:
    """Stop every service `railyard up` started, by the pids it recorded."""
    from cli import platform_up

    said = platform_up.down(command_settings())
    typer.echo("\n".join(said) if said else "the platform is not up: nothing to stop")


@app.command(rich_help_panel=PANEL)
def ps(as_json: Annotated[bool, typer.Option("--json", help="One JSON list.")] = False) -> None:
    """The platform's services: pid, port, health, uptime, restarts, URL."""
    from cli import platform_up

    rows = platform_up.ps(command_settings())
    if as_json:
        print(json.dumps(rows), flush=True)
    elif not rows:
        typer.echo("the platform is not up (`railyard up`)")
    else:
        for line in platform_up.table(rows):
            typer.echo(line)


# -- the online feature store and its event stream ------------------------------------------
