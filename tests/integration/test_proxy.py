"""The authenticating proxy in front of Prefect (infra/platform/proxy.py), a real process in front
of a real Prefect server (and of a small echo server, to see what reaches the upstream)."""

import asyncio
import json

import websockets

from railyard import identity
from tests.support.local_http import QuietHandler, serve_http
from tests.support.proxy import call, credential, running_proxy

PASSWORD = "correct horse battery"
ALICE = credential("alice", PASSWORD)
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"decision": {"type": "string"}, "reviewer": {"type": "string"}, "comment": {"type": "string"}},
    "required": ["decision", "reviewer"],
}
KEYS = {"schema": "review-schema", "response": "review-response", "description": "review-description"}


class Echo(QuietHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"user": self.headers.get("X-Forwarded-User"), "auth": self.headers.get("Authorization")})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())


def test_no_credential_or_a_wrong_one_is_refused_and_the_user_is_named_to_the_upstream(tmp_path):
    identity.add_user(tmp_path, "alice", PASSWORD)
    with serve_http(Echo) as echo, running_proxy(tmp_path, f"http://127.0.0.1:{echo.server_port}") as proxy:
        status, said = call("GET", f"{proxy}/api/health")
        assert status == 401 and "authentication required" in said
        assert call("GET", f"{proxy}/api/health", auth=credential("alice", "not her password"))[0] == 401
        assert call("GET", f"{proxy}/api/health", auth=credential("bob", PASSWORD))[0] == 401
        # A name claimed in the header is not trusted (no trusted upstream is configured).
        forged = {"X-Forwarded-User": "mallory"}
        assert call("GET", f"{proxy}/api/health", headers=forged)[0] == 401
        status, seen = call("GET", f"{proxy}/api/health", auth=ALICE, headers=forged)
        assert (status, seen) == (200, {"user": "alice", "auth": None})  # her password goes no further
        identity.remove_user(tmp_path, "alice")
        assert call("GET", f"{proxy}/api/health", auth=ALICE)[0] == 401  # removed: refused at once
    # Behind an OIDC proxy at a trusted address, its X-Forwarded-User is the user.
    with (
        serve_http(Echo) as echo,
        running_proxy(tmp_path, f"http://127.0.0.1:{echo.server_port}", "127.0.0.1") as proxy,
    ):
        assert call("GET", f"{proxy}/x", headers={"X-Forwarded-User": "oidc-carol"}) == (
            200,
            {"user": "oidc-carol", "auth": None},
        )


def test_a_resume_or_a_deployment_run_through_the_proxy_carries_a_signed_record_of_its_user_and_websockets_pass(
    tmp_path, prefect_server
):
    identity.add_user(tmp_path, "alice", PASSWORD)
    upstream = prefect_server.removesuffix("/api")
    with running_proxy(tmp_path, upstream) as proxy:
        api = f"{proxy}/api"
        flow = call("POST", f"{api}/flows/", {"name": "proxy-review"}, auth=ALICE)[1]["id"]
        paused = {"type": "PAUSED", "name": "Paused", "state_details": {"pause_key": "r", "run_input_keyset": KEYS}}
        run = call("POST", f"{api}/flow_runs/", {"flow_id": flow, "state": paused}, auth=ALICE)[1]["id"]
        schema = {"key": KEYS["schema"], "value": json.dumps(ANSWER_SCHEMA)}
        assert call("POST", f"{api}/flow_runs/{run}/input", schema, auth=ALICE)[0] == 201

        answer = {"decision": "approve", "reviewer": "Mallory", "comment": "fine"}  # a name typed in the form
        assert call("POST", f"{api}/flow_runs/{run}/resume", {"run_input": answer})[0] == 401
        status, result = call("POST", f"{api}/flow_runs/{run}/resume", {"run_input": answer}, auth=ALICE)
        assert (status, result["status"]) == (201, "ACCEPT")
        filtered = {"prefix": identity.record_prefix(answer), "limit": 10}
        records = [i["value"] for i in call("POST", f"{prefect_server}/flow_runs/{run}/input/filter", filtered)[1]]
        assert identity.verified_actor(identity.record_key(tmp_path), run, answer, records) == "alice"

        # A run started from a deployment (the UI's Run button) carries the record of who started
        # it, with the parameters Prefect stored; one created straight through the API carries none.
        deployment = call("POST", f"{prefect_server}/deployments/", {"name": "promote", "flow_id": flow})[1]["id"]
        started = {"parameters": {"version": 3, "reviewer": "Mallory"}}
        status, created = call("POST", f"{api}/deployments/{deployment}/create_flow_run", started, auth=ALICE)
        assert status == 201, created
        direct = call("POST", f"{prefect_server}/deployments/{deployment}/create_flow_run", started)[1]
        for run_id, who in ((created["id"], "alice"), (direct["id"], None)):
            what = identity.started_run(deployment, created["parameters"])
            filtered = {"prefix": identity.record_prefix(what), "limit": 10}
            records = [
                i["value"] for i in call("POST", f"{prefect_server}/flow_runs/{run_id}/input/filter", filtered)[1]
            ]
            assert identity.verified_actor(identity.record_key(tmp_path), run_id, what, records) == who

        async def events_socket() -> dict:
            ws_url = proxy.replace("http", "ws", 1) + "/api/events/out"
            async with websockets.connect(
                ws_url, subprotocols=["prefect"], additional_headers={"Authorization": ALICE}
            ) as socket:
                await socket.send(json.dumps({"type": "auth", "token": None}))
                return json.loads(await asyncio.wait_for(socket.recv(), 30))

        assert asyncio.run(events_socket()) == {"type": "auth_success"}

        async def refused_socket() -> None:
            async with websockets.connect(proxy.replace("http", "ws", 1) + "/api/events/out") as socket:
                await socket.recv()

        try:
            asyncio.run(refused_socket())
            raise AssertionError("a websocket without a credential was let through")
        except (websockets.ConnectionClosed, websockets.InvalidStatus):
            pass
