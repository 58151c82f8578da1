"""A reviewer's answer to a review: the same checks whether it comes from the CLI or from the
Prefect UI's Resume form (``release.review_runs.ApprovalDecision`` is this model as a Prefect
run input). Imports no Prefect: the CLI checks an answer before it asks anything of anyone."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

APPROVE, REJECT = "approve", "reject"
# Prefect's server checks the answer against this JSON schema before it resumes a run, so a
# rejection without a comment never reaches the flow (pydantic repeats the check in Python).
# The UI shows the first failed check's jsonschema message: minLength before the pattern, so an
# empty field reads "'' should be non-empty", not "'' does not match '\S'" (blanks still do).
_NOT_BLANK = {"minLength": 1, "pattern": r"\S"}
_COMMENT_REQUIRED_FOR_REJECT = {
    "if": {"properties": {"decision": {"const": REJECT}}, "required": ["decision"]},
    "then": {"properties": {"comment": _NOT_BLANK}, "required": ["comment"]},
}


class ReviewAnswer(BaseModel):
    """The reviewer's answer (the Prefect UI renders these fields as the Resume form)."""

    model_config = ConfigDict(json_schema_extra=_COMMENT_REQUIRED_FOR_REJECT)

    # The titles are the form's labels: each says when the field is required. The UI adds
    # "(Optional)" to a field the schema does not require, as the comment must be for approvals.
    # No default: submitting the form without choosing is refused, never read as a rejection.
    decision: Literal["approve", "reject"] = Field(
        title="Decision: approve or reject (required)",
        description="approve: the canary becomes production (stable). reject: the canary is unloaded.",
    )
    # The checks are for the server's check of the form; Python's check below says it in words.
    reviewer: str = Field(
        title="Reviewer: your name or e-mail (required)",
        description="Recorded in the audit trail with your decision.",
        json_schema_extra=_NOT_BLANK,
    )
    comment: str = Field(
        default="",
        title="Comment: required to reject",
        description="Why you decide so, recorded with the stage change. A rejection needs one.",
    )

    @field_validator("reviewer", "comment")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _reason_for_rejection(self) -> ReviewAnswer:
        if not self.reviewer:
            raise ValueError("reviewer must not be blank")
        if self.decision == REJECT and not self.comment:
            raise ValueError("a rejection needs a comment saying why")
        return self

    @property
    def approve(self) -> bool:
        return self.decision == APPROVE


def with_name(text: str, named: str | None, actor: str) -> str:
    """The text, with a name given for the record beside the recorded (authenticated) actor."""
    if not named or not named.strip() or named.strip() == actor:
        return text
    return f"{text} [named: {named.strip()}]".strip()
