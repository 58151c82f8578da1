"""The release's commands: the reviewer's answer, rollback, the story so far, a lost registry rebuilt."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from cli.common import command_settings, fail, os_user, with_name
from cli.online_commands import online_store_lines, online_store_state
from railyard.errors import SEE_STATUS

PANEL = "Release"
app = typer.Typer()


def _decide(version: int, decision: str, named: str | None, comment: str) -> None:
    settings = command_settings(store=True)
    from pydantic import ValidationError

    from model_registry.stages import Stage
    from release.decision import REJECT, ReviewAnswer
    from release.reconcile import repair_release_state
    from release.state import registry, release_lock

    try:
        # The reviewer is who runs the command; a name they give is kept beside their comment.
        # A name alone is no reason: a rejection without a comment is refused as before.
        noted = comment if decision == REJECT and not comment else with_name(comment, named)
        answer = ReviewAnswer(decision=decision, reviewer=os_user(), comment=noted)
    except ValidationError as error:
        fail(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in error.errors()),
            f'nothing changed; e.g. `railyard {decision} {version} --comment "why"`',
            code=2,
        )
    with release_lock(settings, f"railyard {decision}"):
        repaired = repair_release_state(settings, start_serving=False)
    for line in repaired:
        typer.echo(f"repaired: {line}")
    stages = registry(settings)
    if version not in stages.all_tags():
        fail(f"{settings.model_name} version {version} is not registered", SEE_STATUS, code=2)
    if (stage := stages.stage(version)) is not Stage.STAGING:
        last = stages.history(version)[-1]
        fail(
            f"{settings.model_name} version {version} is {stage.value} ({last['actor']}: {last['reason']}): "
            "there is no review to answer",
            SEE_STATUS,
            code=2,
        )
    flow_run_id = stages.lineage(version).get("review_run")
    if not flow_run_id:
        fail(f"{settings.model_name} version {version} has no retrain run waiting for a review", SEE_STATUS, code=2)
    from release import review_runs  # Prefect's client: only for a review that can be answered

    try:
        review_runs.answer(flow_run_id, answer, settings.home)
    except Exception as error:  # noqa: BLE001 - NotPausedError, a refused answer, an unreachable API
        fail(
            f"could not resume flow run {flow_run_id} for version {version}: {error}",
            "nothing changed; check that the Prefect API the run uses answers (PREFECT_API_URL), then answer again",
        )
    typer.echo(f"{decision}d {settings.model_name} version {version}; flow run {flow_run_id} resumes and applies it")


Reviewer = Annotated[
    str | None, typer.Option(help="A name to record beside yours (you, the OS user, are recorded as the reviewer).")
]
Comment = Annotated[str, typer.Option(help="Why (recorded with the stage change; required to reject).")]


@app.command(rich_help_panel=PANEL)
def approve(version: int, reviewer: Reviewer = None, comment: Comment = "") -> None:
    """Approve a canary awaiting review: its retrain run promotes it to production."""
    _decide(version, "approve", reviewer, comment)


@app.command(rich_help_panel=PANEL)
def reject(version: int, reviewer: Reviewer = None, comment: Comment = "") -> None:
    """Reject a canary awaiting review: its retrain run unloads it."""
    _decide(version, "reject", reviewer, comment)


@app.command(rich_help_panel=PANEL)
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
    command_settings(store=True)
    from flows.rollback import rollback as rollback_flow

    result = rollback_flow(to_version=to, reason=with_name(reason, actor), actor=os_user())
    typer.echo(f"{result['model_name']} version {result['version']} is stable again; labels {result['serving']}")


@app.command(rich_help_panel=PANEL)
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
    settings = command_settings(store=True)
    from cli.status_view import distinct_labels, drift_run_line, status_lines, version_story
    from infra.rollout.deploy import resolve_target
    from infra.tfserving.model_config import ConfigFileError
    from infra.tfserving.protocol import CANARY, STABLE
    from infra.tfserving.target import serving_labels_on_file
    from model_registry import LockTimeoutError
    from model_registry.history import HistoryMismatch
    from railyard.tracking import last_run as last_training_run
    from release.reconcile import repair_release_state
    from release.state import registry, release_lock

    if verify_history:
        records, problems = registry(settings).verify_history()
        if problems:
            raise HistoryMismatch(f"MLflow disagrees with the transition log: {'; '.join(problems)}")
        typer.echo(f"transition log verified: {records} records, hash chain intact, MLflow agrees", err=as_json)

    try:
        with release_lock(settings, "railyard status", wait_s=0):
            repaired = repair_release_state(settings, start_serving=False)
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
    online = online_store_state(settings)
    live = []
    if online["running"]:  # the store's client (redis) only where there is a store to ask
        from release.traffic import live_figures

        live = live_figures(settings, distinct_labels(serving))
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
    for line in online_store_lines(online):
        typer.echo(line)
    if platform:
        typer.echo(platform_up.summary(platform))


@app.command("restore-registry", rich_help_panel=PANEL)
def restore_registry() -> None:
    """Rebuild a lost MLflow registry from the model store's versions (only into an empty one).

    Each version takes its stage and history from the store's transition log. A version the log
    does not know: the one `stable` serves becomes production again, the others are archived with
    a note that their earlier history was lost (no rollback to them).
    """
    settings = command_settings(store=True)
    from release.reconcile import restore_registry as restore
    from release.state import release_lock

    with release_lock(settings, "railyard restore-registry"):
        versions, production = restore(settings, actor=os_user())
    typer.echo(f"registered {settings.model_name} versions {versions}; production: {production}")
