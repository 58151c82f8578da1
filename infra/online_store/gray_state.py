"""The gray release's shared state in the online store: the canary's share of users (set by the
release flow, read by every ranking-service replica) and each served version's live counters."""

from __future__ import annotations

from collections.abc import Mapping

import redis

from infra.online_store import keys
from infra.online_store.store import reachable
from railyard.gray_rules import LiveFigures, live_figures


def set_canary_share(client: redis.Redis, model: str, share: float) -> None:
    if not 0 <= share <= 1:
        raise ValueError(f"a share of users is between 0 and 1, not {share}")
    with reachable(client):
        client.set(keys.canary_share_key(model), repr(float(share)))


def canary_share(client: redis.Redis, model: str) -> float:
    """The canary's share of users; 0 (everyone on stable) when none was ever set."""
    with reachable(client):
        value = client.get(keys.canary_share_key(model))
    return float(value) if value is not None else 0.0


def add_live(client: redis.Redis, model: str, counts: Mapping[tuple[str, int], Mapping[str, float]]) -> None:
    """Add counters (``railyard.gray_rules.request_counters``, summed) to each (label, version)'s live
    figures: one transaction, so a failed write adds nothing and can be retried whole."""
    pipe = client.pipeline(transaction=True)
    for (label, version), counters in counts.items():
        key = keys.live_key(model, label, version)
        for name, value in counters.items():
            if name == "score_sum":
                pipe.hincrbyfloat(key, name, value)
            else:
                pipe.hincrby(key, name, int(value))
    with reachable(client):
        pipe.execute()


def live(client: redis.Redis, model: str, label: str, version: int) -> LiveFigures:
    with reachable(client):
        counters = client.hgetall(keys.live_key(model, label, version))
    return live_figures(label, version, {name.decode(): float(value) for name, value in counters.items()})


def reset_live(client: redis.Redis, model: str, label: str, version: int) -> None:
    """Start a version's figures afresh (a canary's bake counts only its own requests)."""
    with reachable(client):
        client.delete(keys.live_key(model, label, version))
