"""The gray release's shared state in the online store: the canary's share of users (set by the
release flow, read by every ranking-service replica) and each served version's live counters."""

from __future__ import annotations

import redis

from infra.online_store import keys
from infra.online_store.store import reachable
from railyard.gray import LiveFigures, latency_bucket, live_figures


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


def record(
    client: redis.Redis, model: str, label: str, version: int, latency_ms: float, error: bool, score: float | None
) -> None:
    """Count one answered request of ``label`` (served by ``version``), in one round trip."""
    key = keys.live_key(model, label, version)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(key, "requests", 1)
    pipe.hincrby(key, f"latency_{latency_bucket(latency_ms)}", 1)
    if error:
        pipe.hincrby(key, "errors", 1)
    if score is not None:
        pipe.hincrby(key, "scores", 1)
        pipe.hincrbyfloat(key, "score_sum", score)
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
