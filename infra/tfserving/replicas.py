"""TF Serving replicas behind one client, for the ranking service and the streaming scorer: each
call goes to the next healthy replica (round robin); a replica that does not answer is set aside
for ``cooldown_s`` and the call moves on to the next, so one replica down costs one failed
attempt, not every request.
Set-aside replicas are still tried last, so a call fails only when no replica answers.

Only "unavailable" moves a call on: any other refusal (a bad request, an unknown label) would be
the same on every replica, and is raised as is.

Replicas that can move (the home's local servers, started again on other ports) come with
``locate``: when a replica does not answer, the pool asks it where the replicas run now (at most
every ``relocate_s``) and calls the ones found on other endpoints, in the same call if need be.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import numpy as np

from infra.tfserving.client import ServingClient, ServingUnavailableError
from railyard.contract import SIGNATURE_NAME
from railyard.errors import RailyardError

log = logging.getLogger("railyard.replicas")
T = TypeVar("T")
COOLDOWN_S = 5.0
RELOCATE_S = 1.0


class ReplicaPool:
    def __init__(
        self,
        clients: Sequence[ServingClient],
        *,
        cooldown_s: float = COOLDOWN_S,
        on_health: Callable[[str, bool], None] | None = None,
        locate: Callable[[], Sequence[ServingClient]] | None = None,
        relocate_s: float = RELOCATE_S,
    ) -> None:
        """``on_health(replica, up)``: called whenever a replica is set aside or answers again (or
        is found on a new endpoint). ``locate()``: a client for each replica where it runs now
        (none: unknown now); None: the replicas stay where they are."""
        if not clients:
            raise ValueError("a replica pool needs at least one client")
        self.clients = list(clients)
        self.cooldown_s = cooldown_s
        self._on_health = on_health or (lambda replica, up: None)
        self._locate, self.relocate_s = locate, relocate_s
        self._located_at = float("-inf")
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
        tried: set[ServingClient] = set()
        while untried := [client for client in self._order() if client not in tried]:  # more after a relocation
            for client in untried:
                tried.add(client)
                try:
                    answer = call(client)
                except ServingUnavailableError as error:
                    self._set_health(client.grpc_target, up=False)
                    last = error
                    if self._relocate():
                        break  # the next pass asks the replicas where they run now
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

    def _relocate(self) -> bool:
        """Replace the clients of replicas that ``locate`` finds on other endpoints; whether any moved."""
        with self._lock:
            if self._locate is None or time.monotonic() < self._located_at + self.relocate_s:
                return False
            self._located_at = time.monotonic()
        try:
            found = list(self._locate())
        except (RailyardError, OSError) as error:
            log.warning("the TF Serving replicas could not be located again: %s", error)
            return False
        with self._lock:
            current = {client.grpc_target: client for client in self.clients}
            if not found or [client.grpc_target for client in found] == list(current):
                return False
            # A replaced client is not closed: a call may still hold it (it closes when dropped).
            self.clients = clients = [current.get(client.grpc_target, client) for client in found]
            kept = {client.grpc_target for client in clients}
            self._down_until = {replica: until for replica, until in self._down_until.items() if replica in kept}
        for client in clients:
            if client.grpc_target not in current:
                log.info("TF Serving replica found at %s", client.grpc_target)
                self._on_health(client.grpc_target, True)
        return True

    def _set_health(self, replica: str, *, up: bool) -> None:
        with self._lock:
            was_down = replica in self._down_until
            if up:
                self._down_until.pop(replica, None)
            else:
                self._down_until[replica] = time.monotonic() + self.cooldown_s
        if up == was_down:  # a change
            self._on_health(replica, up)
