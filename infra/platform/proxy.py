"""The authenticating proxy in front of Prefect's UI and API (``railyard up`` runs it).

Prefect's open-source server has no users: anyone who reaches it may answer a review, under any
name. The proxy asks every request for a user of ``railyard users`` (HTTP Basic; the browser
sends it again on the UI's own calls and websockets), forwards HTTP and websockets to the server
with ``X-Forwarded-User`` set, and before it forwards a review's answer (``POST
/api/flow_runs/{id}/resume``) writes the signed record of who sent it (``railyard.identity``)
as a run input of that run: the release takes its actor from that record. A run created from a
deployment (the UI's Run button) gets the same record of who started it, with what parameters:
a promote or rollback run takes its actor from it.

Production option: behind an OIDC proxy, trust its ``X-Forwarded-User`` from the addresses
listed in ``RAILYARD_PROXY_TRUSTED_UPSTREAMS`` (off by default).

Run: ``python -m infra.platform.proxy HOME UPSTREAM_URL PORT [TRUSTED,...]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sys
from pathlib import Path

import httpx
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from railyard import identity

USER_HEADER = "x-forwarded-user"
REALM = 'Basic realm="Railyard", charset="UTF-8"'
RESUME = re.compile(r"^/api/flow_runs/([0-9a-fA-F-]{36})/resume$")
START = re.compile(r"^/api/deployments/([0-9a-fA-F-]{36})/create_flow_run$")
# Not forwarded either way: hop-by-hop headers, the length httpx recomputes, the credential.
DROPPED = {
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "content-encoding",
    "authorization",
    "proxy-authorization",
    USER_HEADER,
}


class Users:
    """The users file, read again when it changes; a credential that proved a user (scrypt is slow
    on purpose) is remembered by its hash until the file changes."""

    def __init__(self, home: Path):
        self.path, self.home = Path(home) / identity.USERS_FILE, Path(home)
        self.stamp: float | None = None
        self.proven: dict[str, str] = {}
        self.users: dict[str, str] = {}

    def check(self, header: str | None) -> str | None:
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        if stamp != self.stamp:
            self.stamp, self.proven, self.users = stamp, {}, identity.read_users(self.home)
        if not header:
            return None
        seen = hashlib.sha256(header.encode()).hexdigest()
        if seen not in self.proven and (user := identity.basic_user(header, self.users)) is not None:
            self.proven[seen] = user  # only what proved someone: wrong guesses do not fill it
        return self.proven.get(seen)


def make_app(home: Path, upstream: str, trusted: frozenset[str] = frozenset()) -> Starlette:
    upstream = upstream.rstrip("/")
    users = Users(home)
    key = identity.record_key(home)
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(120.0), follow_redirects=False)

    def who(scope_headers, client_host: str | None) -> str | None:
        if client_host in trusted and scope_headers.get(USER_HEADER):
            return scope_headers[USER_HEADER]
        return users.check(scope_headers.get("authorization"))

    async def forward(request: Request) -> Response:
        user = who(request.headers, request.client.host if request.client else None)
        if user is None:
            return Response(
                "authentication required: a user of `railyard users`\n",
                status_code=401,
                headers={"WWW-Authenticate": REALM},
            )
        body = await request.body()
        if request.method == "POST" and (resumed := RESUME.match(request.url.path)):
            refused = await record_answer(resumed.group(1), user, body)
            if refused is not None:
                return refused
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED}
        headers[USER_HEADER] = user
        answer = await client.request(
            request.method, request.url.path, params=request.url.query, content=body, headers=headers
        )
        content = answer.content
        if request.method == "POST" and START.match(request.url.path) and answer.status_code == 201:
            created = answer.json()
            started = identity.started_run(created["deployment_id"], created.get("parameters") or {})
            if (refused := await write_record(created["id"], user, started)) is not None:
                return refused  # the run exists, but without the record it refuses to act when it starts
        if request.url.path == "/ui-settings" and answer.status_code == 200:
            # The UI calls the API its settings name: this proxy's, whatever the server was told.
            settings = answer.json() | {"api_url": f"{request.base_url}".rstrip("/") + "/api"}
            content = json.dumps(settings).encode()
        out = {k: v for k, v in answer.headers.items() if k.lower() not in DROPPED}
        return Response(content, status_code=answer.status_code, headers=out)

    async def record_answer(flow_run_id: str, user: str, body: bytes) -> Response | None:
        """Write the signed record of who answers this run; a refusal when it cannot be written."""
        try:
            answer = (json.loads(body or b"{}") or {}).get("run_input") or {}
        except (ValueError, AttributeError):
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        return await write_record(flow_run_id, user, answer)

    async def write_record(flow_run_id: str, user: str, sent: dict) -> Response | None:
        """The signed record that ``user`` sent ``sent`` to this run; a refusal when it cannot be written."""
        record_key, value = identity.signed_record(key, flow_run_id, user, "proxy", sent)
        written = await client.post(
            f"/api/flow_runs/{flow_run_id}/input", json={"key": record_key, "value": value, "sender": user}
        )
        if written.status_code >= 300:
            return Response(
                f"the record of who sent this to flow run {flow_run_id} could not be written "
                f"({written.status_code}): an answer is not forwarded; a started run refuses to act\n",
                status_code=502 if written.status_code >= 500 else written.status_code,
            )
        return None

    async def tunnel(socket: WebSocket) -> None:
        user = who(socket.headers, socket.client.host if socket.client else None)
        if user is None:
            await socket.close(code=1008, reason="authentication required")
            return
        target = (
            upstream.replace("http", "ws", 1) + socket.url.path + (f"?{socket.url.query}" if socket.url.query else "")
        )
        offered = [p.strip() for h in socket.headers.getlist("sec-websocket-protocol") for p in h.split(",") if p]
        async with websockets.connect(
            target, subprotocols=offered or None, additional_headers={"X-Forwarded-User": user}
        ) as server:
            await socket.accept(subprotocol=server.subprotocol)

            async def to_server() -> None:
                try:
                    while True:
                        message = await socket.receive()
                        if message["type"] == "websocket.disconnect":
                            break
                        await server.send(message.get("text") or message.get("bytes"))
                except WebSocketDisconnect:
                    pass
                await server.close()

            async def to_browser() -> None:
                try:
                    async for message in server:
                        if isinstance(message, str):
                            await socket.send_text(message)
                        else:
                            await socket.send_bytes(message)
                except websockets.ConnectionClosed:
                    pass
                await socket.close()

            done, pending = await asyncio.wait(
                [asyncio.create_task(to_server()), asyncio.create_task(to_browser())],
                return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    return Starlette(
        routes=[WebSocketRoute("/{path:path}", tunnel), Route("/{path:path}", forward, methods=methods)],
        lifespan=lifespan,
    )


def main(argv: list[str]) -> None:
    import uvicorn

    home, upstream, port = Path(argv[0]), argv[1], int(argv[2])
    trusted = frozenset(filter(None, (argv[3] if len(argv) > 3 else "").split(",")))
    uvicorn.run(make_app(home, upstream, trusted), host="127.0.0.1", port=port, log_level="info")


if __name__ == "__main__":
    main(sys.argv[1:])
