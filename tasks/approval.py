"""The human approval step: a typed Prefect pause, answered in the UI's Resume form or the CLI."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from pydantic import Field

from railyard.notify import notify
from railyard.settings import Settings


class ApprovalDecision(RunInput):
    """The reviewer's answer (the Prefect UI renders these fields as the Resume form)."""

    approve: bool = Field(description="Tick to promote the canary to production (stable); leave unticked to reject.")
    reviewer: str = Field(min_length=1, description="Who decides: a name or e-mail, recorded in the audit trail.")
    comment: str = Field(default="", description="Why: recorded with the stage change.")


def pause_key(model: str, version: int) -> str:
    return f"approve-{model}-v{version}"


def request_approval(settings: Settings, version: int, summary: str) -> ApprovalDecision | None:
    """Pause the flow run until a reviewer answers; None when nobody did within the timeout.

    Must be called from the flow itself (Prefect pauses flow runs, not task runs).
    """
    model, timeout_s = settings.model_name, settings.approval_timeout_s
    instructions = (
        f"## {model} version {version} is serving as `canary` and awaits approval\n\n{summary}\n\n"
        "Approve or reject with the **Resume** button of this flow run, or from a shell:\n\n"
        f"`railyard approve {version} --reviewer NAME --comment TEXT` / "
        f"`railyard reject {version} --reviewer NAME --comment TEXT`\n\n"
        f"Without an answer within {timeout_s} s the canary is unloaded and the version rejected."
    )
    create_markdown_artifact(key="approval-needed", markdown=instructions, description=f"{model} v{version}: approval needed")
    notify(settings, "approval_needed", f"{model} version {version} awaits approval", version=version)
    try:
        return pause_flow_run(
            wait_for_input=ApprovalDecision.with_initial_data(description=instructions),
            timeout=timeout_s,
            key=pause_key(model, version),
        )
    except FlowPauseTimeout:
        return None


def answer(flow_run_id: str, decision: ApprovalDecision) -> None:
    """Resume a paused retrain run with a decision, through the Prefect API (the CLI's path)."""
    resume_flow_run(flow_run_id, run_input=decision.model_dump(include={"approve", "reviewer", "comment"}))
