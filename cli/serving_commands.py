"""Serving's commands: the local TF-Serving-compatible server, online scores, the ranking service and
the streaming scorer with its requests and results."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.common import command_settings, fail, log_to_terminal, running_serving
from railyard.configs import RANKING_MAX_CANDIDATES

PANEL = "Serving"
app = typer.Typer()


@app.command(rich_help_panel=PANEL)
def serve(
    rest_port: Annotated[
        int | None, typer.Option(help="REST port (default 8501, or any free port when it is taken; 0 = any free port).")
    ] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="gRPC port (default 8500, or any free port when it is taken; 0 = any free port).")
    ] = None,
    background: Annotated[bool, typer.Option("--background", help="Start detached (or reuse) and return.")] = False,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the background server (or the container).")] = False,
    docker: Annotated[
        bool, typer.Option("--docker", help="Run the real TF Serving image in Docker instead (needs a Docker engine).")
    ] = False,
    replicas: Annotated[
        int,
        typer.Option(
            min=1,
            help="Local servers on one model root: the first on the ports above, the others in the background on free ports.",
        ),
    ] = 1,
) -> None:
    """The local TF-Serving-compatible server over RAILYARD_HOME's model root (foreground by default).

    A port set (here or in the settings) that another program holds is refused at once; a port
    left unset is TF Serving's default when free, else any free port (the server says which).
    With --docker: the tensorflow/serving container of the compose stack, serving the same model
    root; it keeps running (restart policy) until `railyard serve --docker --stop`.
    """
    settings = command_settings()
    from infra.local_server import background as local
    from infra.tfserving.protocol import CONFIG_FILE, DEFAULT_GRPC_PORT, DEFAULT_REST_PORT

    rest = settings.local_serving_rest_port if rest_port is None else rest_port
    grpc = settings.local_serving_grpc_port if grpc_port is None else grpc_port
    # Where each port was chosen: what a refusal names.
    chosen = {
        "RAILYARD_LOCAL_SERVING_REST_PORT" if rest_port is None else "--rest-port": rest,
        "RAILYARD_LOCAL_SERVING_GRPC_PORT" if grpc_port is None else "--grpc-port": grpc,
    }
    config_path = settings.resolved_serving_model_root / CONFIG_FILE
    if docker:
        if replicas > 1:
            fail(
                "--replicas starts local servers; the compose stack (infra/stack) runs two TF Serving replicas",
                "nothing was started; leave out --replicas with --docker, or --docker with --replicas",
            )
        _serve_in_docker(
            config_path, DEFAULT_REST_PORT if rest is None else rest, DEFAULT_GRPC_PORT if grpc is None else grpc, stop
        )
        return
    from infra.rollout.deploy import local_replica_dir

    state_dir = settings.local_serving_dir
    if stop:
        state = local.stop(state_dir)
        typer.echo(f"stopped the local server (pid {state.pid})" if state else "no local server is running")
        for replica_dir in sorted(state_dir.glob("replica-*")):
            if state := local.stop(replica_dir):
                typer.echo(f"stopped local {replica_dir.name} (pid {state.pid})")
        return

    def started(state: local.LocalServerState, name: str = "local server") -> None:
        typer.echo(f"{name} pid {state.pid}: REST {state.rest_url}, gRPC {state.grpc_target}")

    if local.running(state_dir) is None:
        local.check_ports_free(chosen)  # before any replica starts
    try:
        settings.resolved_serving_model_root.mkdir(parents=True, exist_ok=True)
        for index in range(1, replicas):
            started(
                local.ensure_local_server(local_replica_dir(settings, index), config_path, 0, 0),
                f"local replica-{index}",
            )
        if background:
            started(local.ensure_local_server(state_dir, config_path, rest, grpc))
        else:
            try:
                local.serve_foreground(state_dir, config_path, rest, grpc, on_started=started)
            finally:  # the other replicas end with the foreground one
                for index in range(1, replicas):
                    local.stop(local_replica_dir(settings, index))
    except (OSError, TimeoutError) as error:
        fail(str(error), f"the server's log is {state_dir / local.LOG_FILE}; `railyard serve --stop` ends what started")


def _serve_in_docker(config_path: Path, rest: int, grpc: int, stop: bool) -> None:
    from infra.docker_launcher import MODEL_ROOT, TFServingLauncher
    from infra.tfserving.model_config import ensure_config_file

    launcher = TFServingLauncher(model_root_volume=str(config_path.parent), grpc_port=grpc, rest_port=rest)
    if stop:
        typer.echo(f"TF Serving container {launcher.name}: {launcher.stop().state}")
        return
    ensure_config_file(config_path)  # TF Serving does not start without its config file
    status = launcher.start()
    typer.echo(f"TF Serving container {launcher.name}: {status.state}; point Railyard at it with")
    typer.echo(
        f"  RAILYARD_SERVING_GRPC=127.0.0.1:{grpc} RAILYARD_SERVING_REST=http://127.0.0.1:{rest} "
        f"RAILYARD_SERVING_SERVER_MODEL_ROOT={MODEL_ROOT}"
    )


@app.command("score", rich_help_panel=PANEL)
def score(
    user: Annotated[str, typer.Argument(help="userId")],
    movies: Annotated[list[str], typer.Argument(help="one or more movieIds")],
    label: Annotated[str, typer.Option(help="The served label to ask.")] = "stable",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """Score a user's movies the online way: fresh features from the online store, then the
    served model's `features` signature over gRPC (what a ranking service in front of TF
    Serving does)."""
    from railyard.contract import request_id

    # The ranking service's id rule, before anything is started or imported.
    user_id, movie_ids = request_id("userId", user), [request_id("movieId", movie) for movie in movies]
    settings = command_settings()
    from infra.online_store.store import connect
    from infra.scoring import score_online

    target = running_serving(settings)
    with target.client() as client:
        store = connect(settings)
        scores = score_online(store, client, settings.model_name, [user_id] * len(movie_ids), movie_ids, label=label)
    if as_json:
        print(json.dumps({"userId": user_id, "label": label, "scores": dict(zip(movie_ids, scores.tolist()))}))
        return
    for movie, value in zip(movie_ids, scores):
        typer.echo(f"user {user_id}, movie {movie}: {value:.6f} ({label}, fresh features)")


@app.command("rank-server", rich_help_panel=PANEL)
def rank_server(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on (default: RAILYARD_RANKING_HOST, 127.0.0.1; loopback: the API has no authentication)."
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on (default: RAILYARD_RANKING_PORT, 8600).")
    ] = None,
    candidates: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=RANKING_MAX_CANDIDATES,
            help="Candidates scored per recommendation (a request may ask for another number) "
            "(default: RAILYARD_RANKING_CANDIDATES, 100).",
        ),
    ] = None,
) -> None:
    """Run the ranking service in front of TF Serving: /v1/recommend, /v1/score, /healthz,
    /readyz, /metrics. Users go to `stable` or `canary` by the canary's share in the online store."""
    settings = command_settings()

    from infra.online_store.store import connect
    from infra.ranking import create_app, serve

    host, port = host or settings.ranking_host, port or settings.ranking_port
    log_to_terminal()
    target = running_serving(settings)
    if host not in ("127.0.0.1", "::1", "localhost"):
        typer.secho(
            f"warning: listening on {host}: the ranking service has no authentication; put a proxy that has in front",
            fg=typer.colors.YELLOW,
            err=True,
        )
    # A failing replica must not hold a request for long: quick tries, then the next replica.
    options = settings.ranking_replica_options()
    with target.clients(**options) as clients:
        app_ = create_app(
            connect(settings),
            clients,
            settings.model_name,
            settings.ranking_config(),
            candidates=candidates or settings.ranking_candidates,
            locate_replicas=_replica_locator(settings, options),
        )
        grpc = ", ".join(replica.grpc for replica in target.replicas)
        typer.echo(f"ranking service for {settings.model_name} on http://{host}:{port} (TF Serving gRPC {grpc})")
        serve(app_, host, port)


def _replica_locator(settings, options: dict):
    """Where the home's local servers run now (started again, they may be on other ports), as
    clients with ``options``; None when RAILYARD_SERVING_* name the replicas (they are fixed)."""
    if settings.serving_replicas:
        return None
    from infra.rollout.deploy import resolve_target
    from infra.tfserving.client import ServingClient

    def locate() -> list:
        found = resolve_target(settings)
        return [ServingClient(replica.grpc, replica.rest, **options) for replica in found.replicas] if found else []

    return locate


# -- streaming inference (infra/streaming) ----------------------------------------------------


@app.command("score-stream", rich_help_panel=PANEL)
def score_stream(
    consumer: Annotated[str | None, typer.Option(help="Consumer name in group `scorer` (default host-pid).")] = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Return once no request is new or pending (else run until Ctrl-C).")
    ] = False,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics, /healthz, /readyz.")] = "127.0.0.1",
) -> None:
    """Score requests from the requests stream in micro-batches through TF Serving's gRPC Predict,
    one result per request id in the results stream (docs/operations.md, streaming inference)."""
    settings = command_settings()
    import signal

    from infra.online_store.store import connect
    from infra.streaming.http import serve_status
    from infra.streaming.scorer import Scorer
    from infra.tfserving.replicas import ReplicaPool

    log_to_terminal()
    target = running_serving(settings)
    config = settings.scorer_config()
    # One quick try per call and replica: the scorer's own loop waits for serving with backoff, requests pending.
    options = {"timeout_s": config.serving_timeout_s, "attempts": 1}
    with target.clients(**options) as clients:
        serving = ReplicaPool(clients, locate=_replica_locator(settings, options))
        scorer = Scorer(connect(settings), serving, settings.model_name, config, consumer_name=consumer)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: scorer.stop.set())  # the batch in hand is finished first
        scorer.warm_up()
        status = serve_status(scorer, metrics_host, settings.scorer_metrics_port)
        typer.echo(
            f"scoring {settings.model_name} from the requests stream; /metrics on "
            f"http://{metrics_host}:{status.server_address[1]}",
            err=True,
        )
        scorer.run(until_idle=until_idle)
        status.shutdown()
    done = scorer.consumer.entries[scorer.consumer.groups[0]]
    typer.echo(f"requests done: {done:,}, {scorer.consumer.dead_letters:,} dead-lettered")


@app.command("publish-requests", rich_help_panel=PANEL)
def publish_requests(
    file: Annotated[Path, typer.Argument(help="JSON lines: id, userId, movieIds (a list), optional deadline_ms.")],
    timeout_ms: Annotated[
        int | None, typer.Option(min=1, help="A deadline this many ms from now for requests without one.")
    ] = None,
) -> None:
    """Publish score requests to the requests stream (all or none: a malformed line refuses the file)."""
    settings = command_settings()

    from infra.online_store.keys import SCORE_REQUESTS
    from infra.online_store.store import connect
    from infra.streaming.requests import read_request_file
    from infra.streaming.scorer import publish_requests as publish

    requests = read_request_file(file, settings.scorer_max_movies, timeout_ms, time.time_ns() // 1_000_000)
    typer.echo(f"published {publish(connect(settings).client, requests):,} requests to {SCORE_REQUESTS}")


@app.command("replay-requests", rich_help_panel=PANEL)
def replay_requests(
    start_ms: Annotated[int, typer.Option("--from", min=0, help="Arrived at or after (Unix ms).")],
    end_ms: Annotated[int, typer.Option("--to", min=0, help="Arrived at or before (Unix ms).")],
    suffix: Annotated[str, typer.Option(help="Added to each request id (a new id gets a new result).")] = "-replay",
) -> None:
    """Publish again the requests of a time range, with new ids (docs/operations.md, streaming inference)."""
    settings = command_settings()
    from infra.online_store.store import connect
    from infra.streaming.scorer import replay_requests as replay

    typer.echo(f"published {replay(connect(settings).client, start_ms, end_ms, suffix):,} requests again")


@app.command("results", rich_help_panel=PANEL)
def results(
    last: Annotated[int, typer.Option("--last", min=1, max=100_000, help="How many of the newest results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print the newest results of the streaming scorer, oldest first."""
    settings = command_settings()
    from infra.online_store.store import connect
    from infra.streaming.requests import read_result
    from infra.streaming.scorer import last_results

    for _, fields in last_results(connect(settings).client, last):
        result = read_result(fields)
        if as_json:
            print(json.dumps(result))
        elif result["status"] != "ok":
            typer.echo(f"{result['id']}: {result['status']} (user {result['userId']}, {result['latency_ms']:.1f} ms)")
        else:
            scores = ", ".join(f"{m}: {s:.6f}" for m, s in zip(result["movieIds"], result["scores"]))
            flag = ", degraded" if result["degraded"] else ""
            typer.echo(
                f"{result['id']}: user {result['userId']} {scores} (v{result['version']} {result['label']}{flag}, "
                f"{result['latency_ms']:.1f} ms)"
            )
