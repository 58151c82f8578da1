"""Tell people what happened: a log line always, and a short JSON post to an optional webhook.

A notification never changes how a run ends: whatever goes wrong with the webhook (down, a
malformed URL, a refusal) is logged, never raised. The URL is treated as a secret (webhook
URLs carry their token in the path or query): logs name it only with its secret parts
redacted.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from railyard.settings import Settings

log = logging.getLogger("railyard.notify")
WEBHOOK_TIMEOUT_S = 5


def redact_url(url: str) -> str:
    """The URL as logs may show it: scheme, host and port; user-info, path and query elided."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "<a webhook URL without scheme or host>"
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, host, "/…" if parts.path not in ("", "/") or parts.query else "", "", ""))


def notify(settings: Settings, event: str, message: str, **fields) -> dict:
    """``event``: run_failed, approval_needed, promoted or rejected."""
    payload = {"event": event, "model": settings.model_name, "message": message, **fields}
    log.log(logging.WARNING if event == "run_failed" else logging.INFO, "%s: %s", event, message)
    if settings.webhook_url is not None:
        _post(settings.webhook_url.get_secret_value(), event, payload)
    return payload


def _post(url: str, event: str, payload: dict) -> None:
    try:
        request = urllib.request.Request(
            url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S).close()
    except Exception as error:  # noqa: BLE001 - a notification must never fail what it reports
        log.warning(
            "webhook delivery of %s failed (to %s): %s: %s",
            event,
            redact_url(url),
            type(error).__name__,
            _scrub(error, url),
        )


def _scrub(error: Exception, url: str) -> str:
    """The error's text without any secret part of the URL (urllib and http.client quote the
    whole URL, or its path and query, in their messages)."""
    parts = urlsplit(url)
    secrets = [url, parts.netloc, f"{parts.path}?{parts.query}", parts.path, parts.query, parts.password or ""]
    text = str(error)
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        if secret not in ("/", parts.hostname):
            text = text.replace(secret, "…")
    return text
