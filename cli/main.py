"""The ``railyard`` command line: the top of the layering, it drives flows, tasks and infra.

Heavy libraries (TensorFlow, Great Expectations, MLflow, Prefect) are imported inside the
commands that need them, so ``railyard --help`` answers at once. An error Railyard raises on
purpose ends the command with one ``error:`` line, the next step, and the error's exit code
(2: refused, nothing changed; 1: something did not answer or broke), never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from railyard.errors import SEE_STATUS, RailyardError, Refused
from railyard.runtime import prepare_environment

app = typer.Typer(
    name="railyard",
    help="Railyard: daily TensorFlow retraining shipped safely to TensorFlow Serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


DEBUG_FLAG = "--debug"
# This invocation's global options (set by ``options`` before the command runs), and the log
# file of a run it started.
_options: dict = {"debug": False, "run_log": None}


@app.callback()
def options(
    debug: Annotated[
        bool, typer.Option(DEBUG_FLAG, help="Show the traceback of an error, and TensorFlow's own log lines.")
    ] = False,
) -> None:
    """Options that apply to every command (give them before the command)."""
    _options.update(debug=debug, run_log=None)


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
    if _options.get("run_log"):  # a run that failed: its log file holds the whole story
        next_step = f"{next_step} (the run's full log: {_options['run_log']})"
    # One write: another process sharing stderr (Prefect's temporary server) never lands between them.
    typer.echo(typer.style(f"error: {message}", fg=typer.colors.RED) + f"\nnext: {next_step}", err=True)


def _fail(message: str, next_step: str, code: int = 1) -> NoReturn:
    """End the command: ``code`` 2 when Refused (nothing changed), 1 otherwise; ``main`` prints
    the ``error:`` and ``next:`` lines."""
    error = (Refused if code == 2 else RailyardError)(message)
    error.next_step = next_step
    raise error


@app.command("generate-data")
def generate_data(
    out: Annotated[Path, typer.Option(help="Output folder (ratings.csv + movies.csv).")],
    users: Annotated[int, typer.Option(min=1)] = 600,
    movies: Annotated[int, typer.Option(min=1)] = 1500,
    days: Annotated[int, typer.Option(min=1)] = 30,
    ratings_per_day: Annotated[int, typer.Option(min=1)] = 3000,
    seed: int = 7,
    fmt: Annotated[str, typer.Option("--format", help="csv, or parquet (date=YYYY-MM-DD partitions)")] = "csv",
    mode: Annotated[
        str,
        typer.Option(
            help="sessions (users arrive over the period and rate in sittings, like MovieLens) or "
            "stationary (every day drawn alike)"
        ),
    ] = "sessions",
) -> None:
    """Generate a synthetic MovieLens-format data set with learnable structure."""
    from railyard.synthetic import generate_movielens

    if fmt not in ("csv", "parquet"):
        _fail(f"--format must be csv or parquet, not {fmt!r}", "nothing was written; give --format csv or parquet")
    if mode not in ("sessions", "stationary"):
        _fail(
            f"--mode must be sessions or stationary, not {mode!r}",
            "nothing was written; give --mode sessions or stationary",
        )
    try:
        summary = generate_movielens(
            out,
            users=users,
            movies=movies,
            days=days,
            ratings_per_day=ratings_per_day,
            seed=seed,
            fmt=fmt,
            mode=mode,
        )
    except (FileExistsError, ValueError) as error:
        _fail(str(error), "nothing was written; fix what the message names (another --out folder, an option's value)")
    typer.echo(
        f"wrote {summary.n_ratings:,} ratings ({summary.n_users:,} users, {summary.n_movies:,} movies, "
        f"positive rate {summary.positive_rate:.2f}) to {summary.out_dir}"
    )


def _settings(*, store: bool = False):
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
    prepare_environment(settings.home, 0 if _options["debug"] else settings.tf_log_level)
    return settings


@app.command()
def run(
    data: Annotated[
        Path | None, typer.Option("--data", help="MovieLens-format folder or date-partitioned Parquet.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Maximum training epochs.")] = None,
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Promote without a reviewer when every check passes.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON line at the end.")] = False,
) -> None:
    """Run the daily retraining flow once, now (generates a small data set on first use).

    Without --auto-approve the run pauses after the smoke tests until a reviewer answers
    (`railyard approve|reject VERSION` from another shell, or the Prefect UI).
    """
    settings = _settings(store=True)
    from infra.rollout.deploy import refuse_taken_local_ports
    from railyard.kinds.registry import load_kind

    # A model kind that does not resolve, or bad settings of it, refuse the run at once (the flow
    # checks them too, for a deployment's run).
    load_kind(settings.model_kind)
    # The run needs its serving ports and its online store: refuse a taken port set, or start the
    # store, at once, before Prefect and the flow start (the flow checks the serving ports too).
    refuse_taken_local_ports(settings)
    if settings.online_store_url is None:
        from infra.online_store import server

        server.ensure_running(settings)
    from flows.retrain import retrain

    parameters = {"data_dir": str(data.resolve()) if data else None, "epochs": epochs}
    with _run_log(settings.home / "logs", settings.keep_run_dirs):
        summary = retrain(**{k: v for k, v in parameters.items() if v is not None}, auto_approve=auto_approve)
    if as_json:
        print(json.dumps(summary, sort_keys=True), flush=True)
    else:
        _print_summary(summary)


class _UntilFailure(logging.Filter):
    """Passes a run's log records to the terminal until its first failure (an error or a
    traceback): from then on they go to the run's log file only, and the CLI's ``error:`` and
    ``next:`` lines say what happened and where that file is."""

    failed = False

    def filter(self, record: logging.LogRecord) -> bool:
        self.failed = self.failed or record.levelno >= logging.ERROR or record.exc_info is not None
        return not self.failed


@contextmanager
def _run_log(folder: Path, keep: int) -> Iterator[Path]:
    """Every log record of the run, tracebacks included, in a new file under ``folder`` (the
    newest ``keep`` are kept); without --debug the terminal shows them only until a failure."""
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"run-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
    to_file = logging.FileHandler(path, encoding="utf-8")
    for old in sorted(folder.glob("run-*.log"))[:-keep]:  # this run's is the newest
        old.unlink(missing_ok=True)
    to_file.setFormatter(
        PrefectFormatter(
            "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s",
            flow_run_fmt="%(asctime)s | %(levelname)-7s | Flow run %(flow_run_name)r - %(message)s",
            task_run_fmt="%(asctime)s | %(levelname)-7s | Task run %(task_run_name)r - %(message)s",
        )
    )
    root = logging.getLogger()
    consoles = [handler for handler in root.handlers if isinstance(handler, PrefectConsoleHandler)]
    until_failure = _UntilFailure()
    root.addHandler(to_file)
    if not _options["debug"]:
        for console in consoles:
            console.addFilter(until_failure)
    _options["run_log"] = path
    try:
        yield path
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for console in consoles:
            console.removeFilter(until_failure)


def _print_summary(summary: dict) -> None:
    lines = [f"model {summary['model_name']} version {summary['model_version']}: {summary['outcome']}"]
    if summary.get("store_uri"):
        lines.append(f"stored at {summary['store_uri']}")
    if summary.get("metrics"):
        lines.append("holdout: " + ", ".join(f"{name} {value:.4f}" for name, value in summary["metrics"].items()))
    lines.append(f"MLflow run {summary['mlflow_run_id']} ({summary['mlflow_tracking_uri']})")
    lines.append(f"data fingerprint {summary['data_fingerprint'][:16]}…")
    if summary.get("serving"):
        lines.append(f"serving labels: {summary['serving']['labels']} at {summary['serving']['rest']}")
    if summary.get("curl"):
        lines.append(f"try it: {summary['curl']}")
    typer.echo("\n".join(lines))


@app.command()
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
    settings = _settings()
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
            _fail(
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

    def started(state: local.ServerState, name: str = "local server") -> None:
        typer.echo(f"{name} pid {state.pid}: REST {state.rest_url}, gRPC {state.grpc_target}")

    if local.running(state_dir) is None:
        local.check_ports_free(chosen)  # before any replica starts
    try:
        settings.resolved_serving_model_root.mkdir(parents=True, exist_ok=True)
        for index in range(1, replicas):
            started(
                local.ensure_running(local_replica_dir(settings, index), config_path, 0, 0), f"local replica-{index}"
            )
        if background:
            started(local.ensure_running(state_dir, config_path, rest, grpc))
        else:
            try:
                local.serve_foreground(state_dir, config_path, rest, grpc, on_started=started)
            finally:  # the other replicas end with the foreground one
                for index in range(1, replicas):
                    local.stop(local_replica_dir(settings, index))
    except (OSError, TimeoutError) as error:
        _fail(
            str(error), f"the server's log is {state_dir / local.LOG_FILE}; `railyard serve --stop` ends what started"
        )


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


def _decide(version: int, decision: str, named: str | None, comment: str) -> None:
    settings = _settings(store=True)
    from pydantic import ValidationError

    from model_registry.stages import Stage
    from release.decision import REJECT, ReviewAnswer
    from release.reconcile import reconcile
    from release.state import registry, release_lock

    try:
        # The reviewer is who runs the command; a name they give is kept beside their comment.
        # A name alone is no reason: a rejection without a comment is refused as before.
        noted = comment if decision == REJECT and not comment else _with_name(comment, named)
        answer = ReviewAnswer(decision=decision, reviewer=_os_user(), comment=noted)
    except ValidationError as error:
        _fail(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors()),
            f'nothing changed; e.g. `railyard {decision} {version} --comment "why"`',
            code=2,
        )
    with release_lock(settings, f"railyard {decision}"):
        repaired = reconcile(settings, start_serving=False)
    for line in repaired:
        typer.echo(f"repaired: {line}")
    stages = registry(settings)
    if version not in stages.all_tags():
        _fail(f"{settings.model_name} version {version} is not registered", SEE_STATUS, code=2)
    if (stage := stages.stage(version)) is not Stage.STAGING:
        last = stages.history(version)[-1]
        _fail(
            f"{settings.model_name} version {version} is {stage.value} ({last['actor']}: {last['reason']}): "
            "there is no review to answer",
            SEE_STATUS,
            code=2,
        )
    flow_run_id = stages.lineage(version).get("review_run")
    if not flow_run_id:
        _fail(f"{settings.model_name} version {version} has no retrain run waiting for a review", SEE_STATUS, code=2)
    from release import review_runs  # Prefect's client: only for a review that can be answered

    try:
        review_runs.answer(flow_run_id, answer, settings.home)
    except Exception as error:  # noqa: BLE001 - NotPausedError, a refused answer, an unreachable API
        _fail(
            f"could not resume flow run {flow_run_id} for version {version}: {error}",
            "nothing changed; check that the Prefect API the run uses answers (PREFECT_API_URL), then answer again",
        )
    typer.echo(f"{decision}d {settings.model_name} version {version}; flow run {flow_run_id} resumes and applies it")


Reviewer = Annotated[
    str | None, typer.Option(help="A name to record beside yours (you, the OS user, are recorded as the reviewer).")
]
Comment = Annotated[str, typer.Option(help="Why (recorded with the stage change; required to reject).")]


@app.command()
def approve(version: int, reviewer: Reviewer = None, comment: Comment = "") -> None:
    """Approve a canary awaiting review: its retrain run promotes it to production."""
    _decide(version, "approve", reviewer, comment)


@app.command()
def reject(version: int, reviewer: Reviewer = None, comment: Comment = "") -> None:
    """Reject a canary awaiting review: its retrain run unloads it."""
    _decide(version, "reject", reviewer, comment)


@app.command()
def rollback(
    to: Annotated[
        int | None, typer.Option("--to", help="Version to restore (default: the previous production).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")] = "manual rollback",
    actor: Annotated[
        str | None, typer.Option(help="A name to record beside yours (you, the OS user, are recorded).")
    ] = None,
) -> None:
    """Put an earlier production version back on `stable`."""
    _settings(store=True)
    from flows.rollback import rollback as rollback_flow

    result = rollback_flow(to_version=to, reason=_with_name(reason, actor), actor=_os_user())
    typer.echo(f"{result['model_name']} version {result['version']} is stable again; labels {result['serving']}")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    verify_history: Annotated[
        bool, typer.Option("--verify-history", help="Check the transition log's hash chain and MLflow against it.")
    ] = False,
) -> None:
    """Model versions with their stage and who moved them there, when and why (a version under
    review: since when, its run, its deadline), what each serving label points at, live figures.

    Concludes first what can be concluded: reviews that timed out, runs that crashed (see
    docs/release.md); each repair is listed. With --verify-history, first checks the model
    store's transition log (exit 2 when a record was tampered with or MLflow disagrees).
    """
    settings = _settings(store=True)
    from cli.status_view import distinct_labels, drift_run_line, status_lines, version_story
    from infra.rollout.deploy import resolve_target
    from infra.tfserving.model_config import ConfigFileError
    from infra.tfserving.protocol import CANARY, STABLE
    from infra.tfserving.target import serving_labels_on_file
    from model_registry import LockTimeoutError
    from model_registry.history import HistoryMismatch
    from railyard.tracking import last_run as last_training_run
    from release.reconcile import reconcile
    from release.state import registry, release_lock
    from release.traffic import live_figures

    if verify_history:
        records, problems = registry(settings).verify_history()
        if problems:
            raise HistoryMismatch(f"MLflow disagrees with the transition log: {'; '.join(problems)}")
        typer.echo(f"transition log verified: {records} records, hash chain intact, MLflow agrees", err=as_json)

    try:
        with release_lock(settings, "railyard status", wait_s=0):
            repaired = reconcile(settings, start_serving=False)
    except LockTimeoutError as busy:
        repaired = [f"not reconciled: a release is in progress ({busy})"]
    versions = [version_story(entry) for entry in registry(settings).versions()]
    last_run = last_training_run(settings)
    target = resolve_target(settings)
    serving: dict[str, int | None] = {}
    down = "the local server is not running (`railyard serve --background`)"
    if target is not None:
        with target.client(attempts=1) as client:
            serving = {label: client.label_version(settings.model_name, label) for label in (STABLE, CANARY)}
    else:
        try:
            serving_labels_on_file(settings)  # the file it would start from
        except ConfigFileError as error:
            down = f"the local server is not running and cannot start: {error}"
    online = _online_store_state(settings)
    live = live_figures(settings, distinct_labels(serving)) if online["running"] else []
    from cli import platform_up

    platform = platform_up.ps(settings)
    if as_json:
        print(
            json.dumps(
                {
                    "model_name": settings.model_name,
                    "versions": versions,
                    "serving": serving,
                    "online_store": online,
                    "live": [asdict(figures) | {"error_rate": figures.error_rate} for figures in live],
                    "repaired": repaired,
                    "serving_down": None if target is not None else down,
                    "last_run_drift": drift_run_line(last_run),
                    "platform": platform,
                },
                sort_keys=True,
            )
        )
        return
    for line in status_lines(versions, serving, None if target is not None else down, live, repaired, last_run):
        typer.echo(line)
    for line in _online_store_lines(online):
        typer.echo(line)
    if platform:
        typer.echo(platform_up.summary(platform))


@app.command("score")
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
    settings = _settings()
    from infra.online_store.store import connect
    from infra.rollout.deploy import resolve_target
    from infra.scoring import score_online

    target = resolve_target(settings)
    if target is None:
        _fail("serving is not running", "start it with `railyard serve --background` (or run `railyard run`)")
    with target.client() as client:
        store = connect(settings)
        scores = score_online(store, client, settings.model_name, [user_id] * len(movie_ids), movie_ids, label=label)
    if as_json:
        print(json.dumps({"userId": user_id, "label": label, "scores": dict(zip(movie_ids, scores.tolist()))}))
        return
    for movie, value in zip(movie_ids, scores):
        typer.echo(f"user {user_id}, movie {movie}: {value:.6f} ({label}, fresh features)")


@app.command("restore-registry")
def restore_registry() -> None:
    """Rebuild a lost MLflow registry from the model store's versions (only into an empty one).

    Each version takes its stage and history from the store's transition log. A version the log
    does not know: the one `stable` serves becomes production again, the others are archived with
    a note that their earlier history was lost (no rollback to them).
    """
    settings = _settings(store=True)
    from release.reconcile import restore_registry as restore
    from release.state import release_lock

    with release_lock(settings, "railyard restore-registry"):
        versions, production = restore(settings, actor=_os_user())
    typer.echo(f"registered {settings.model_name} versions {versions}; production: {production}")


def _with_name(text: str, named: str | None) -> str:
    """The text, with a name the user gave for the record (the recorded actor is the OS user)."""
    from release.decision import with_name

    return with_name(text, named, _os_user())


def _os_user() -> str:
    import getpass

    return getpass.getuser()


REPO_ROOT = Path(__file__).resolve().parent.parent
WORK_POOL = "railyard"


def _prefect(*args: str, check: bool = True):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=REPO_ROOT, check=check)


@app.command()
def deploy() -> None:
    """Register the deployments of prefect.yaml (daily retrain, promote, rollback) with the Prefect API."""
    _settings()
    if "PREFECT_API_URL" not in os.environ:
        _fail(
            "PREFECT_API_URL is not set: deployments need a Prefect server, not the ephemeral API",
            "start a Prefect server (`prefect server start`), set PREFECT_API_URL to its API, then deploy again",
            code=2,
        )
    if _prefect("work-pool", "inspect", WORK_POOL, check=False).returncode != 0:
        _prefect("work-pool", "create", WORK_POOL, "--type", "process")
    _prefect("--no-prompt", "deploy", "--all")


@app.command()
def worker(
    run_once: Annotated[bool, typer.Option("--run-once", help="Exit after the runs scheduled now.")] = False,
) -> None:
    """Start a process worker on the `railyard` work pool (runs scheduled and UI-started flow runs).

    One SIGTERM or Ctrl-C stops it and the runs it started: each run concludes its release as
    interrupted (docs/release.md) within RAILYARD_WORKER_STOP_GRACE_S, then whatever still runs is killed.
    """
    settings = _settings(store=True)
    from railyard.processes import run_supervised

    args = ["worker", "start", "--pool", WORK_POOL, "--type", "process"] + (["--run-once"] if run_once else [])
    command = [sys.executable, "-m", "prefect", *args]
    raise typer.Exit(run_supervised(command, grace_s=settings.worker_stop_grace_s, cwd=REPO_ROOT))


# -- the whole platform on this machine ------------------------------------------------------


@app.command()
def up(as_json: Annotated[bool, typer.Option("--json", help="What runs, as one JSON list.")] = False) -> None:
    """Start every service under RAILYARD_HOME, supervised: PostgreSQL, Prefect (server, UI,
    deployments, a worker), MLflow (tracking, UI), serving, the online store, the ingester, the
    ranking service. Each on 127.0.0.1 on a port the home records; `railyard down` stops them."""
    from cli import platform_up
    from railyard.settings import load_settings

    platform_up.check_writable(load_settings())  # before anything is written under the home
    settings = _settings()
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


@app.command()
def down() -> None:
    """Stop every service `railyard up` started, by the pids it recorded."""
    from cli import platform_up

    said = platform_up.down(_settings())
    typer.echo("\n".join(said) if said else "the platform is not up: nothing to stop")


@app.command()
def ps(as_json: Annotated[bool, typer.Option("--json", help="One JSON list.")] = False) -> None:
    """The platform's services: pid, port, health, uptime, restarts, URL."""
    from cli import platform_up

    rows = platform_up.ps(_settings())
    if as_json:
        print(json.dumps(rows), flush=True)
    elif not rows:
        typer.echo("the platform is not up (`railyard up`)")
    else:
        for line in platform_up.table(rows):
            typer.echo(line)


users_app = typer.Typer(
    help="The users the proxy in front of Prefect's UI and API authenticates (hashed, owner-only file).",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")


@users_app.command("add")
def users_add(name: str) -> None:
    """Add a user; the password is read from a prompt (or one line of stdin), never the command line."""
    import getpass

    from railyard import identity

    settings = _settings()
    if name in identity.read_users(settings.home):  # refused before a password is asked for
        identity.add_user(settings.home, name, "")
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            _fail("the two passwords differ: nothing was changed", f"`railyard users add {name}` again", code=2)
    else:
        password = sys.stdin.readline().rstrip("\n")
    identity.add_user(settings.home, name, password)
    typer.echo(f"added user {name}")


@users_app.command("remove")
def users_remove(name: str) -> None:
    """Remove a user (the proxy refuses their credential from the next request on)."""
    from railyard import identity

    identity.remove_user(_settings().home, name)
    typer.echo(f"removed user {name}")


@users_app.command("list")
def users_list() -> None:
    """The users, one a line."""
    from railyard import identity

    users = sorted(identity.read_users(_settings().home))
    typer.echo("\n".join(users) if users else "no users (`railyard users add NAME`)")


# -- the online feature store and its event stream ------------------------------------------


@app.command("publish-events")
def publish_events(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with userId, movieId, rating, timestamp.")],
) -> None:
    """Publish rating events to the event stream (all or none: a malformed row refuses the file)."""
    settings = _settings()
    from infra.online_store.keys import STREAM
    from infra.online_store.store import connect
    from infra.online_store.stream import publish, read_event_file

    events = read_event_file(file)
    typer.echo(f"published {publish(connect(settings), events):,} events to {STREAM}")


@app.command()
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
    settings = _settings()
    import logging
    import signal
    import threading

    from infra.online_store.keys import GROUPS
    from infra.online_store.store import connect
    from infra.online_store.stream import Ingester, rebuild_from_batch

    if group not in (*GROUPS, "both"):
        _fail(f"--group must be online, sink or both, not {group!r}", "give --group online, sink or both", code=2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
app.add_typer(online_store_app, name="online-store")


@online_store_app.command("start")
def online_store_start() -> None:
    """Start the embedded store in the background (or reuse the running one)."""
    settings = _settings()
    from infra.online_store import server

    if settings.online_store_url is not None:
        typer.echo("RAILYARD_ONLINE_STORE_URL is set: Railyard uses that server; nothing to start")
        return
    state = server.ensure_running(settings)
    typer.echo(f"online store pid {state.pid} on {server.HOST}:{state.port} (data in {server.server_dir(settings)})")


@online_store_app.command("stop")
def online_store_stop() -> None:
    """Stop the embedded store (its data stays on disk)."""
    settings = _settings()
    from infra.online_store import server

    state = server.stop(settings)
    typer.echo(f"stopped the online store (pid {state.pid})" if state else "the online store is not running")


@online_store_app.command("status")
def online_store_status(as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False) -> None:
    """Features held (namespace, events applied, last event), stream length, pending per group, dead
    letters; the streaming scorer's requests, lag, dead letters and results."""
    state = _online_store_state(_settings())
    if as_json:
        print(json.dumps(state, sort_keys=True))
        return
    for line in _online_store_lines(state):
        typer.echo(line)


def _online_store_state(settings) -> dict:
    """The online store's state, or ``{"running": False}`` when the embedded one is not running
    (never starts it: a status must not change anything) or the store does not answer."""
    from infra.online_store import server
    from infra.online_store.store import OnlineStoreUnavailable, connect

    if settings.online_store_url is None and server.running(server.server_dir(settings)) is None:
        return {"running": False, "error": "not running (`railyard online-store start`)"}
    from infra.streaming.scorer import stream_state

    try:
        store = connect(settings)
        return {"running": True} | store.state() | {"scorer": stream_state(store.client)}
    except OnlineStoreUnavailable as error:
        return {"running": False, "error": str(error)}


def _online_store_lines(state: dict) -> list[str]:
    if not state["running"]:
        return [f"online store: {state['error']}"]
    last = state["last_event_ts"]
    groups = ", ".join(f"{name}: {g['pending']} pending, lag {g['lag']}" for name, g in state["groups"].items())
    from cli.status_view import scorer_line

    return [
        f"online store: namespace {state['namespace'] or '(none: run `railyard ingest --rebuild`)'}, "
        f"{state['events_applied']:,} events applied, last event at {last if last is None else _utc(last)}",
        f"event stream: {state['stream_length']:,} entries ({groups or 'no consumer groups yet'}), "
        f"{state['dead_letters']:,} dead letters",
        scorer_line(state["scorer"]),
    ]


def _utc(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


@app.command("rank-server")
def rank_server(
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default: the API has no authentication).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8600,
    candidates: Annotated[
        int,
        typer.Option(
            min=1, max=10_000, help="Candidates scored per recommendation (a request may ask for another number)."
        ),
    ] = 100,
) -> None:
    """Run the ranking service in front of TF Serving: /v1/recommend, /v1/score, /healthz,
    /readyz, /metrics. Users go to `stable` or `canary` by the canary's share in the online store."""
    settings = _settings()
    import logging

    from infra.online_store.store import connect
    from infra.ranking import create_app, serve
    from infra.rollout.deploy import resolve_target

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    target = resolve_target(settings)
    if target is None:
        _fail("serving is not running", "start it with `railyard serve --background` (or run `railyard run`)")
    if host not in ("127.0.0.1", "::1", "localhost"):
        typer.secho(
            f"warning: listening on {host}: the ranking service has no authentication; put a proxy that has in front",
            fg=typer.colors.YELLOW,
            err=True,
        )
    # A failing replica must not hold a request for long: two quick tries, then the next replica.
    options = {"timeout_s": 5.0, "attempts": 2, "backoff_s": 0.05}
    with target.clients(**options) as clients:
        app_ = create_app(
            connect(settings),
            clients,
            settings.model_name,
            candidates=candidates,
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


@app.command("score-stream")
def score_stream(
    consumer: Annotated[str | None, typer.Option(help="Consumer name in group `scorer` (default host-pid).")] = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Return once no request is new or pending (else run until Ctrl-C).")
    ] = False,
    metrics_host: Annotated[str, typer.Option(help="Address of /metrics, /healthz, /readyz.")] = "127.0.0.1",
) -> None:
    """Score requests from the requests stream in micro-batches through TF Serving's gRPC Predict,
    one result per request id in the results stream (docs/operations.md, streaming inference)."""
    settings = _settings()
    import logging
    import signal

    from infra.online_store.store import connect
    from infra.rollout.deploy import resolve_target
    from infra.streaming.http import serve_status
    from infra.streaming.scorer import Scorer
    from infra.tfserving.replicas import ReplicaPool

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    target = resolve_target(settings)
    if target is None:
        _fail("serving is not running", "start it with `railyard serve --background` (or run `railyard run`)")
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


@app.command("publish-requests")
def publish_requests(
    file: Annotated[Path, typer.Argument(help="JSON lines: id, userId, movieIds (a list), optional deadline_ms.")],
    timeout_ms: Annotated[
        int | None, typer.Option(min=1, help="A deadline this many ms from now for requests without one.")
    ] = None,
) -> None:
    """Publish score requests to the requests stream (all or none: a malformed line refuses the file)."""
    settings = _settings()
    import time

    from infra.online_store.keys import SCORE_REQUESTS
    from infra.online_store.store import connect
    from infra.streaming.requests import read_request_file
    from infra.streaming.scorer import publish_requests as publish

    requests = read_request_file(file, settings.scorer_max_movies, timeout_ms, time.time_ns() // 1_000_000)
    typer.echo(f"published {publish(connect(settings).client, requests):,} requests to {SCORE_REQUESTS}")


@app.command("replay-requests")
def replay_requests(
    start_ms: Annotated[int, typer.Option("--from", min=0, help="Arrived at or after (Unix ms).")],
    end_ms: Annotated[int, typer.Option("--to", min=0, help="Arrived at or before (Unix ms).")],
    suffix: Annotated[str, typer.Option(help="Added to each request id (a new id gets a new result).")] = "-replay",
) -> None:
    """Publish again the requests of a time range, with new ids (docs/operations.md, streaming inference)."""
    settings = _settings()
    from infra.online_store.store import connect
    from infra.streaming.scorer import replay_requests as replay

    typer.echo(f"published {replay(connect(settings).client, start_ms, end_ms, suffix):,} requests again")


@app.command("results")
def results(
    last: Annotated[int, typer.Option("--last", min=1, max=100_000, help="How many of the newest results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print the newest results of the streaming scorer, oldest first."""
    settings = _settings()
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
