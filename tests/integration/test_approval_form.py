"""The review form: an explicit decision, a reviewer, a reason for a rejection; checked by
pydantic in Python and by a real Prefect server before it resumes a run."""

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from pydantic import ValidationError

from release.review_runs import ApprovalDecision

WAITING_FLOW = """
import os, time
from pathlib import Path
from prefect import flow
from release.review_runs import await_decision

@flow
def waits():
    decision, actor = await_decision(
        "recmodel", 1, "review me", time.time() + 300, suspend=False, home=Path(os.environ["RAILYARD_HOME"]), poll_s=1
    )
    print("DECISION", actor, decision.model_dump_json(include={"decision", "reviewer", "comment"}), flush=True)

waits()
"""


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"reviewer": "alice"}, "decision"),  # no default: not choosing is not a rejection
        ({"decision": "approve", "reviewer": "   "}, "reviewer must not be blank"),
        ({"decision": "reject", "reviewer": "bob"}, "a rejection needs a comment"),
        ({"decision": "reject", "reviewer": "bob", "comment": "  "}, "a rejection needs a comment"),
        ({"decision": "maybe", "reviewer": "bob"}, "decision"),
    ],
)
def test_the_form_refuses_an_answer_that_is_not_a_clear_decision(answer, message):
    with pytest.raises(ValidationError, match=message):
        ApprovalDecision(**answer)


def test_a_decision_is_trimmed_and_approve_needs_no_comment():
    decision = ApprovalDecision(decision="approve", reviewer="  alice ", comment=" fine ")
    assert decision.approve and (decision.reviewer, decision.comment) == ("alice", "fine")
    assert not ApprovalDecision(decision="reject", reviewer="bob", comment="odd").approve


def _flow_run(api_url: str, run_id: str) -> dict:
    with urllib.request.urlopen(f"{api_url}/flow_runs/{run_id}", timeout=10) as response:
        return json.loads(response.read())


def test_a_real_prefect_server_refuses_bad_answers_and_resumes_with_a_good_one(prefect_server, tmp_path):
    """Bad answers are refused by the server; an answer sent straight to the API (no signed record
    of who sent it) is refused by the run, which waits again; the CLI's signed answer counts."""
    env = os.environ | {"PREFECT_API_URL": prefect_server, "RAILYARD_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_HOME", None)
    waiting = subprocess.Popen(
        [sys.executable, "-c", WAITING_FLOW],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=os.getcwd(),
    )
    try:
        run_id = _wait_for_paused_run(prefect_server)
        schema = _saved_schema(prefect_server, run_id)
        assert "default" not in schema["properties"]["decision"] and "decision" in schema["required"]
        # The form's labels say what is required when.
        titles = {name: field["title"] for name, field in schema["properties"].items()}
        assert titles == {
            "decision": "Decision: approve or reject (required)",
            "reviewer": "Reviewer: your name or e-mail (required)",
            "comment": "Comment: required to reject",
        }

        bad = [
            {"reviewer": "alice", "comment": ""},
            {"decision": "approve", "reviewer": "   ", "comment": ""},
            {"decision": "reject", "reviewer": "bob", "comment": ""},
        ]
        client_env = {"PREFECT_API_URL": prefect_server, "RAILYARD_HOME": str(tmp_path / "home")}
        for answer in bad:
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"from prefect.flow_runs import resume_flow_run; resume_flow_run({run_id!r}, run_input={answer!r})",
                ],
                env=os.environ | client_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode != 0 and "Validation failed" in result.stderr, result.stderr[-2000:]
            assert _flow_run(prefect_server, run_id)["state"]["type"] == "PAUSED"

        # Straight to Prefect's API, as a script bypassing the proxy would: the run refuses it,
        # says so, and waits again under its next pause key.
        direct = {"decision": "approve", "reviewer": "alice", "comment": "trust me"}
        resume = f"from prefect.flow_runs import resume_flow_run; resume_flow_run({run_id!r}, run_input={direct!r})"
        sent = subprocess.run(
            [sys.executable, "-c", resume], env=os.environ | client_env, capture_output=True, text=True, timeout=120
        )
        assert sent.returncode == 0, sent.stderr[-2000:]
        deadline = time.monotonic() + 60
        while (state := _flow_run(prefect_server, run_id)["state"])["state_details"].get("pause_key") != (
            "approve-recmodel-v1-2"
        ):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["type"] == "PAUSED"

        good = subprocess.run(
            [
                sys.executable,
                "-c",
                "from release.review_runs import ApprovalDecision, answer; "
                "from railyard.settings import Settings; "
                f"answer({run_id!r}, ApprovalDecision(decision='reject', reviewer='bob', comment='odd scores'), "
                "Settings().home)",
            ],
            env=os.environ | client_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert good.returncode == 0, good.stderr[-2000:]
        output, _ = waiting.communicate(timeout=120)
        assert "an unauthenticated answer (approve, typed name 'alice') reached the review" in output
        assert 'DECISION bob {"decision":"reject","reviewer":"bob","comment":"odd scores"}' in output
    finally:
        waiting.kill()
        waiting.wait()


def _wait_for_paused_run(api_url: str, timeout_s: float = 180) -> str:
    deadline = time.monotonic() + timeout_s
    query = json.dumps({"flows": {"name": {"any_": ["waits"]}}, "flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"{api_url}/flow_runs/filter", data=query.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())
        if runs:
            return runs[0]["id"]
        time.sleep(1)
    raise TimeoutError("no flow run paused")


def _saved_schema(api_url: str, run_id: str) -> dict:
    request = urllib.request.Request(
        f"{api_url}/flow_runs/{run_id}/input/filter",
        data=json.dumps({"prefix": "paused-"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        inputs = json.loads(response.read())
    (schema,) = [json.loads(item["value"]) for item in inputs if item["key"].endswith("schema")]
    return schema
