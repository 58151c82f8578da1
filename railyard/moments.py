"""How Railyard writes a moment for people: in every message, log line and report alike."""

from __future__ import annotations

from datetime import UTC, datetime


def when(timestamp: float) -> str:
    """A moment as a reader wants it: date, time and zone (UTC, the zone every process shares)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
