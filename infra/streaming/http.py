"""The scorer's operations endpoint: ``/metrics`` (Prometheus text), ``/healthz`` (the process
answers and its consumer is running) and ``/readyz`` (the online store and TF Serving's
`stable` answer: 503 with the problems otherwise), on a thread of the scorer's process."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from infra.streaming.scorer import Scorer


def serve_status(scorer: Scorer, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoint on ``host:port`` (0: any free port) in a daemon thread; the server
    (``server_address`` has the port; ``shutdown()`` stops it)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                body, content_type = scorer.metrics.exposition()
                self._send(200, body, content_type)
            elif self.path == "/healthz":
                running = not scorer.stop.is_set()
                self._json(200 if running else 503, {"status": "ok" if running else "stopping"})
            elif self.path == "/readyz":
                problems = scorer.readiness()
                self._json(503 if problems else 200, {"ready": not problems, "problems": problems})
            else:
                self._json(404, {"error": f"no such path: {self.path}"})

        def _json(self, status: int, body: dict) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes every few seconds: not worth a log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="scorer-status", daemon=True).start()
    return server
