"""The human approval step: a typed Prefect pause, answered in the UI's Resume form or the CLI.

A run of a deployment *suspends*: its process exits and holds no worker, concurrency slot or
lease while the reviewer takes their time; the answer reschedules the run, which starts again
and finds its decision waiting (see docs/release.md). A run without a deployment (`railyard run`
in a terminal) cannot be rescheduled, so it *pauses* in its own process.

An answer counts only with a signed record of who sent it (``railyard.identity``: written by the
proxy in front of Prefect, or by ``answer`` for the CLI); one without is refused and the review
waits again until its deadline.
"""

from __future__ import annotations

import itertools
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import pause_flow_run, resume_flow_run, suspend_flow_run
from prefect.input import RunInput, keyset_from_base_key, read_flow_run_input

from model_registry.release_rules import RunView
from railyard import identity
from railyard.errors import Refused
from release.decision import ReviewAnswer

log = logging.getLogger("railyard.approval")
APPROVAL_ARTIFACT = "approval-needed"
# The flow that rejects a review nobody answered in time (prefect.yaml); a run of it is
# scheduled at every suspended review's deadline.
DEADLINE_DEPLOYMENT = "reconcile/reconcile"
DEADLINE_MARGIN_S = 10  # Prefect's server fails an expired pause within 5 s (its loop)
RESUME_ATTEMPTS = 3


class ApprovalDecision(ReviewAnswer, RunInput):
    """The reviewer's answer as the Prefect run input the Resume form renders and the run reads."""


def pause_key(model: str, version: int, attempt: int = 0) -> str:
    """The pause of a review; an answer refused as unauthenticated is waited for again under the next."""
    return f"approve-{model}-v{version}" + (f"-{attempt + 1}" if attempt else "")


def await_decision(
    model: str, version: int, instructions: str, deadline: float, *, suspend: bool, home: Path, poll_s: int
) -> tuple[ApprovalDecision | None, str | None]:
    """The reviewer's decision and who sent it, as a signed record proves (``answered_by``);
    (None, None) when nobody answered by ``deadline``.

    An answer without a valid record (sent to Prefect's API directly, not through the proxy or
    the CLI) changes nothing: it is recorded as unauthenticated and refused, and the review waits
    again, under the next pause key, until its deadline (docs/release.md).

    Must be called from the flow itself (Prefect pauses flow runs, not task runs). With
    ``suspend`` a wait ends the process (Prefect's ``Pause``); when the run starts again after
    the answer, the same call finds the answers given so far at once.
    """
    from prefect.runtime import flow_run

    flow_run_id = str(flow_run.get_id())
    form = ApprovalDecision.with_initial_data(description=instructions)
    for attempt in itertools.count():
        key = pause_key(model, version, attempt)
        decision = _answered(key) if suspend else None
        if decision is None:
            timeout_s = int(deadline - time.time())
            if timeout_s <= 0:
                return None, None
            if suspend:
                # Ends this process (an answered key is read above: calling suspend_flow_run on it
                # would return the answer too, but first log "Suspending flow run…").
                decision = suspend_flow_run(wait_for_input=form, timeout=timeout_s, key=key)
            else:
                try:
                    decision = pause_flow_run(wait_for_input=form, timeout=timeout_s, key=key, poll_interval=poll_s)
                except FlowPauseTimeout:
                    _conclude_here()
                    return None, None
        actor = answered_by(home, flow_run_id, decision)
        if actor is not None:
            return decision, actor
        if not suspend or _answered(pause_key(model, version, attempt + 1)) is None:  # not announced before
            _refuse_unauthenticated(flow_run_id, model, version, decision)


def _answered(key: str) -> ApprovalDecision | None:
    """The answer a suspended run received under ``key`` (None: not answered yet)."""
    answered = read_flow_run_input(keyset_from_base_key(f"suspended-{key}")["response"])
    return ApprovalDecision(**answered) if answered is not None else None


def answered_by(home: Path, flow_run_id: str, decision: ReviewAnswer) -> str | None:
    """Who a signed record (``railyard.identity``) says sent this answer to this run, or None."""
    answer = decision.model_dump(include=set(identity.ANSWER_FIELDS))
    with get_client(sync_client=True) as client:
        return _signed_by(client, identity.record_key(home), flow_run_id, answer)


def _signed_by(client, key: bytes, flow_run_id: str, sent: dict) -> str | None:
    """The actor of a valid signed record of ``sent`` among this run's inputs, or None."""
    records = client.filter_flow_run_input(
        UUID(flow_run_id), key_prefix=identity.record_prefix(sent), limit=50, exclude_keys=set()
    )
    return identity.verified_actor(key, flow_run_id, sent, [record.value for record in records])


def _refuse_unauthenticated(flow_run_id: str, model: str, version: int, decision: ReviewAnswer) -> None:
    said = (
        f"an unauthenticated answer ({decision.decision}, typed name {decision.reviewer!r}) reached the review of "
        f"{model} version {version} without passing the proxy: refused, nothing changed. Answer through the proxy's "
        f"URL (`railyard ps`) or with `railyard {decision.decision} {version}`; the review waits until its deadline"
    )
    print(said)  # the run's log (log_prints)
    post_artifact(flow_run_id, APPROVAL_ARTIFACT, f"## Refused: unauthenticated\n\n{said}", "unauthenticated answer")


def _conclude_here() -> None:
    """Take a run whose pause ran out back to RUNNING, so that it records its own ending.

    Prefect refuses any next state of a paused run past its deadline (the run would end
    "Failed: … never resumed", and its server may already have failed it): forced, as a
    run that is still alive and concludes the timeout itself.
    """
    from prefect.runtime import flow_run
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            UUID(flow_run.get_id()), Running(message="no decision in time: concluding"), force=True
        )


def answer(
    flow_run_id: str, decision: ReviewAnswer, home: Path, *, via: str = "cli", attempts: int = RESUME_ATTEMPTS
) -> None:
    """Resume a waiting retrain run with a decision, through the Prefect API, signed as sent by
    ``decision.reviewer`` (the OS user of the CLI, or Railyard itself): only the home's owner
    can read the key that signs it.

    A refusal (the run is not waiting, the answer does not fit the form) is final; anything else
    (an API that is restarting, SQLite's "database is locked") is tried again before it is raised.
    """
    run_input = decision.model_dump(include=set(identity.ANSWER_FIELDS))
    key, record = identity.signed_record(identity.record_key(home), flow_run_id, decision.reviewer, via, run_input)
    with get_client(sync_client=True) as client:
        client.create_flow_run_input(UUID(flow_run_id), key=key, value=record, sender=decision.reviewer)
    for attempt in range(1, attempts + 1):
        try:
            return resume_flow_run(flow_run_id, run_input=run_input)
        except (RuntimeError, FlowPauseTimeout, ObjectNotFound):  # NotPausedError is a RuntimeError
            raise
        except Exception as error:
            if attempt == attempts:
                raise
            log.warning("resuming flow run %s failed (attempt %d/%d): %s", flow_run_id, attempt, attempts, error)
            time.sleep(2.0 * attempt)


def run_view(flow_run_id: str) -> RunView | None:
    """The run's state as Prefect reports it; None when the API cannot be asked."""
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except ObjectNotFound:
        return RunView(None)
    except Exception as error:  # noqa: BLE001 - an unreachable API: nothing can be concluded from it
        log.warning("could not read flow run %s from Prefect: %s", flow_run_id, error)
        return None
    if state is None:
        return RunView("SCHEDULED")
    return RunView(state.type.value, state.name or "", state.message or "")


def close_review(flow_run_id: str, outcome: str) -> None:
    """Fail a run that still waits for a decision that no longer matters, so the UI offers no
    Resume form, and leave the outcome beside the approval request."""
    from prefect.states import Failed

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and run.state.is_paused():
                client.set_flow_run_state(run.id, Failed(message=outcome), force=True)
    except Exception as error:  # noqa: BLE001 - the release state is already recorded in MLflow
        log.warning("could not close the review of flow run %s in Prefect: %s", flow_run_id, error)
    post_artifact(flow_run_id, APPROVAL_ARTIFACT, f"## Closed\n\n{outcome}", description="review closed")


def post_artifact(flow_run_id: str, key: str, markdown: str, description: str | None = None) -> None:
    """A markdown artifact on a flow run, also from outside it (hooks, other processes)."""
    from prefect.client.schemas.actions import ArtifactCreate

    artifact = ArtifactCreate(
        key=key, type="markdown", data=markdown, description=description, flow_run_id=UUID(flow_run_id)
    )
    try:
        with get_client(sync_client=True) as client:
            client.create_artifact(artifact)
    except Exception as error:  # noqa: BLE001 - the log and the webhook still say it
        log.warning("could not post the %s artifact on flow run %s: %s", key, flow_run_id, error)


def schedule_deadline_check(deadline: float) -> str | None:
    """A run of the reconcile deployment at the review's deadline rejects it if nobody answered;
    the id of that scheduled run (None when it could not be scheduled)."""
    from prefect.deployments import run_deployment

    try:
        when = datetime.fromtimestamp(deadline + DEADLINE_MARGIN_S, UTC)
        scheduled = run_deployment(DEADLINE_DEPLOYMENT, scheduled_time=when, timeout=0, as_subflow=False)
    except Exception as error:  # noqa: BLE001 - without it the next run or `railyard status` rejects it
        log.warning(
            "could not schedule %s at the review deadline (%s); the next run or `railyard status` will close "
            "an unanswered review",
            DEADLINE_DEPLOYMENT,
            error,
        )
        return None
    return str(scheduled.id)


def cancel_deadline_check(flow_run_id: str | None, why: str) -> None:
    """Cancel the deadline's reconcile run of a review that is over. Cancelled, not deleted: the UI
    keeps it, saying why it never ran. Only while it is still scheduled (once it runs, it is the
    reconciliation that concludes the review)."""
    from prefect.states import Cancelled

    if not flow_run_id:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
            if run.state is not None and run.state.is_scheduled():
                client.set_flow_run_state(run.id, Cancelled(message=why), force=True)
    except Exception as error:  # noqa: BLE001 - it would find nothing to do at the deadline anyway
        log.warning("could not cancel the deadline check %s: %s", flow_run_id, error)


class UnauthenticatedRun(Refused):
    """A promote or rollback run of a deployment that nobody proved they started."""

    next_step = (
        "start it from the Prefect UI at the proxy's URL (`railyard ps`), signed in as a user of "
        "`railyard users`, or from a shell: `railyard approve VERSION` / `railyard rollback`"
    )


def who_started(home: Path, flow_run_id: str, wait_s: float) -> str:
    """The user a signed record says started this deployment run through the proxy, with the
    parameters it runs with; refused (``UnauthenticatedRun``) when no record proves anyone
    within ``wait_s`` (a run created straight through Prefect's API, or by the schedule)."""
    key = identity.record_key(home)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        started = identity.started_run(str(run.deployment_id), run.parameters)
        deadline = time.monotonic() + wait_s
        while True:
            if (actor := _signed_by(client, key, flow_run_id, started)) is not None:
                return actor
            if time.monotonic() >= deadline:
                raise UnauthenticatedRun(
                    f"flow run {flow_run_id} was not started through the proxy in front of Prefect: nobody "
                    "proved who asked for it, so it changes nothing in production"
                )
            time.sleep(0.5)
