"""Tell people what happened: a log line always, and a short JSON post to an optional webhook.

A webhook that is down must never fail a release: delivery errors are logged, not raised.
"""

from __future__ import annotations

import json
import logging
import urllib.request

from railyard.settings import Settings

log = logging.getLogger("railyard.notify")
WEBHOOK_TIMEOUT_S = 5


def notify(settings: Settings, event: str, message: str, **fields) -> dict:
    """``event``: run_failed, approval_needed or promoted."""
    payload = {"event": event, "model": settings.model_name, "message": message, **fields}
    log.log(logging.WARNING if event == "run_failed" else logging.INFO, "%s: %s", event, message)
    if settings.webhook_url:
        request = urllib.request.Request(
            settings.webhook_url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S).close()
        except OSError as error:
            log.warning("webhook delivery of %s failed: %s", event, error)
    return payload
