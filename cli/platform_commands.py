"""The whole platform on this machine: `railyard up`, `down`, `ps` (the logic is in cli/platform_up.py), and
the users its proxy in front of Prefect authenticates (`railyard users`)."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cli.common import command_settings, fail

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
    settings = command_settings()
    started, rows = platform_up.up(settings)
    if as_json:
        print(json.dumps(rows), flush=True)
        return
    typer.echo("the platform is up:" if started else "the platform was already up:")
    for line in platform_up.table(rows):
        typer.echo(line)
    from railyard import identity

    if not identity.read_users(settings.home):
        typer.echo("nobody can sign in to the Prefect UI (the proxy's URL) yet: `railyard users add NAME`")


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


users_app = typer.Typer(
    help="The users the proxy in front of Prefect's UI and API authenticates (hashed, owner-only file).",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users", rich_help_panel=PANEL)


@users_app.command("add")
def users_add(name: str) -> None:
    """Add a user; the password is read from a prompt (or one line of stdin), never the command line."""
    import getpass

    from railyard import identity

    settings = command_settings()
    if name in identity.read_users(settings.home):  # refused before a password is asked for
        identity.add_user(settings.home, name, "")
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            fail("the two passwords differ: nothing was changed", f"`railyard users add {name}` again", code=2)
    else:
        password = sys.stdin.readline().rstrip("\n")
    identity.add_user(settings.home, name, password)
    typer.echo(f"added user {name}")


@users_app.command("remove")
def users_remove(name: str) -> None:
    """Remove a user (the proxy refuses their credential from the next request on)."""
    from railyard import identity

    identity.remove_user(command_settings().home, name)
    typer.echo(f"removed user {name}")


@users_app.command("list")
def users_list() -> None:
    """The users, one a line."""
    from railyard import identity

    users = sorted(identity.read_users(command_settings().home))
    typer.echo("\n".join(users) if users else "no users (`railyard users add NAME`)")
