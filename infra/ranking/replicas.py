"""TF Serving replicas behind one client, for the ranking service: each call goes to the next
healthy replica (round robin); a replica that does not answer is set aside for ``cooldown_s`` and
the call moves on to the next, so one replica down costs one failed attempt, not every request.
Set-aside replicas are still tried last, so a call fails only when no replica answers.

Only "unavailable" moves a call on: any other refusal (a bad request, an unknown label) would be
the same on every replica, and is raised as is.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from infra.tfserving.client import ServingClient, ServingUnavailableError
from railyard.contract import SIGNATURE_NAME

T = TypeVar("T")
COOLDOWN_S = 5.0


class ReplicaPool:
    def __init__(
        self,
        clients: Sequence[ServingClient],
        *,
        cooldown_s: float = COOLDOWN_S,
        on_health: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``on_health(replica, up)``: called whenever a replica is set aside or answers again."""
        if not clients:
            raise ValueError("a replica pool needs at least one client")
        self.clients = list(clients)
        self.cooldown_s = cooldown_s
        self._on_health = on_health or (lambda replica, up: None)
        self._down_until: dict[str, float] = {}
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def predict_grpc_versioned(
        self,
        model: str,
        instances: Mapping[str, np.ndarray],
        version: int | None = None,
        label: str | None = None,
        signature_name: str = SIGNATURE_NAME,
    ) -> tuple[dict[str, np.ndarray], int | None]:
        return self._call(
            lambda client: client.predict_grpc_versioned(
                model, instances, version=version, label=label, signature_name=signature_name
            )
        )

    def label_version(self, model: str, label: str) -> int | None:
        return self._call(lambda client: client.label_version(model, label))

    def down(self) -> list[str]:
        """The replicas set aside now (their gRPC targets)."""
        now = time.monotonic()
        with self._lock:
            return [replica for replica, until in self._down_until.items() if until > now]

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def _call(self, call: Callable[[ServingClient], T]) -> T:
        last: ServingUnavailableError | None = None
        for client in self._order():
            try:
                answer = call(client)
            except ServingUnavailableError as error:
                self._set_health(client.grpc_target, up=False)
                last = error
                continue
            self._set_health(client.grpc_target, up=True)
            return answer
        assert last is not None
        if len(self.clients) == 1:
            raise last
        raise ServingUnavailableError(
            f"none of the {len(self.clients)} TF Serving replicas answers (last: {last})",
            code="UNAVAILABLE",
            details=last.details,
        ) from last

    def _order(self) -> list[ServingClient]:
        """Every replica once: the healthy ones from this call's turn on, then the set-aside ones."""
        now = time.monotonic()
        with self._lock:
            start = next(self._turn) % len(self.clients)
            rotated = self.clients[start:] + self.clients[:start]
            healthy = [c for c in rotated if self._down_until.get(c.grpc_target, 0.0) <= now]
        return healthy + [c for c in rotated if c not in healthy]

    def _set_health(self, replica: str, *, up: bool) -> None:
        with self._lock:
            was_down = replica in self._down_until
            if up:
                self._down_until.pop(replica, None)
            else:
                self._down_until[replica] = time.monotonic() + self.cooldown_s
        if up == was_down:  # a change
            self._on_health(replica, up)
