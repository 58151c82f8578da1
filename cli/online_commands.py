"""The online side's commands: rating events onto the stream, the ingester, the embedded online store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli.common import command_settings, fail, log_to_terminal, utc

PANEL = "Online features"
app = typer.Typer()


@app.command("publish-events", rich_help_panel=PANEL)
def publish_events(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with userId, movieId, rating, timestamp.")],
) -> None:
    """Publish rating events to the event stream (all or none: a malformed row refuses the file)."""
    settings = command_settings()
    from infra.online_store.keys import STREAM
    from infra.online_store.store import connect
    from infra.online_store.stream import publish, read_event_file

    events = read_event_file(file)
    typer.echo(f"published {publish(connect(settings), events):,} events to {STREAM}")


@app.command(rich_help_panel=PANEL)
def ingest(
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="First rebuild the online store from the batch data.")
    ] = False,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Return once no entry is new or pending (else run until Ctrl-C).")
    ] = False,
    consumer: Annotated[str | None, typer.Option(help="Consumer name in its groups (default host-pid).")] = None,
    group: Annotated[str, typer.Option(help="online (features), sink (data set) or both.")] = "both",
) -> None:
    """Consume the event stream: keep the online store's features fresh and append events to the data set."""
    settings = command_settings()
    import signal
    import threading

    from infra.online_store.keys import GROUPS
    from infra.online_store.store import connect
    from infra.online_store.stream import Ingester, rebuild_from_batch

    if group not in (*GROUPS, "both"):
        fail(f"--group must be online, sink or both, not {group!r}", "give --group online, sink or both", code=2)
    log_to_terminal()
    store = connect(settings)
    if rebuild:
        typer.echo(f"rebuilt the online store: namespace {rebuild_from_batch(store, settings.resolved_data_dir)}")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())  # the batch in hand is finished and acknowledged first
    ingester = Ingester(
        store,
        settings.resolved_data_dir,
        groups=GROUPS if group == "both" else (group,),
        consumer=consumer,
        batch_size=settings.ingest_batch_size,
        claim_idle_s=settings.ingest_claim_idle_s,
        stop=stop,
    )
    report = ingester.run(until_idle=until_idle)
    done = ", ".join(f"{name} {count:,}" for name, count in report.entries.items())
    typer.echo(
        f"entries done: {done}; {report.applied:,} events new to the online store, {report.written:,} written "
        f"to the data set in {report.files:,} files, {report.dead_letters:,} dead-lettered"
    )


online_store_app = typer.Typer(help="The embedded online feature store (Valkey on 127.0.0.1).", no_args_is_help=True)
app.add_typer(online_store_app, name="online-store", rich_help_panel=PANEL)


@online_store_app.command("start")
def online_store_start() -> None:
    """Start the embedded store in the background (or reuse the running one)."""
    settings = command_settings()
    from infra.online_store import valkey_process

    if settings.online_store_url is not None:
        typer.echo("RAILYARD_ONLINE_STORE_URL is set: Railyard uses that server; nothing to start")
        return
    state = valkey_process.ensure_valkey(settings)
    typer.echo(
        f"online store pid {state.pid} on {valkey_process.HOST}:{state.port} (data in {valkey_process.server_dir(settings)})"
    )


@online_store_app.command("stop")
def online_store_stop() -> None:
    """Stop the embedded store (its data stays on disk)."""
    settings = command_settings()
    from infra.online_store import valkey_process

    state = valkey_process.stop(settings)
    typer.echo(f"stopped the online store (pid {state.pid})" if state else "the online store is not running")


@online_store_app.command("status")
def online_store_status(as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False) -> None:
    """Features held (namespace, events applied, last event), stream length, pending per group, dead
    letters; the streaming scorer's requests, lag, dead letters and results."""
    state = online_store_state(command_settings())
    if as_json:
        print(json.dumps(state, sort_keys=True))
        return
    for line in online_store_lines(state):
        typer.echo(line)


def online_store_state(settings) -> dict:
    """The online store's state, or ``{"running": False}`` when the embedded one is not running
    (never starts it: a status must not change anything) or the store does not answer."""
    from infra.online_store import valkey_process

    if settings.online_store_url is None and valkey_process.running(valkey_process.server_dir(settings)) is None:
        return {"running": False, "error": "not running (`railyard online-store start`)"}
    from infra.online_store.store import OnlineStoreUnavailable, connect
    from infra.streaming.scorer import stream_state

    try:
        store = connect(settings)
        return {"running": True} | store.state() | {"scorer": stream_state(store.client)}
    except OnlineStoreUnavailable as error:
        return {"running": False, "error": str(error)}


def online_store_lines(state: dict) -> list[str]:
    if not state["running"]:
        return [f"online store: {state['error']}"]
    last = state["last_event_ts"]
    groups = ", ".join(f"{name}: {g['pending']} pending, lag {g['lag']}" for name, g in state["groups"].items())
    from cli.status_view import scorer_line

    return [
        f"online store: namespace {state['namespace'] or '(none: run `railyard ingest --rebuild`)'}, "
        f"{state['events_applied']:,} events applied, last event at {last if last is None else utc(last)}",
        f"event stream: {state['stream_length']:,} entries ({groups or 'no consumer groups yet'}), "
        f"{state['dead_letters']:,} dead letters",
        scorer_line(state["scorer"]),
    ]
