"""The gray release: the canary's share of users in the online store (read by every
ranking-service replica, which routes by it), its bake on live traffic, and its live figures.
Every function that changes the share says so in its name or docstring: it moves live traffic."""

import logging
import time

from infra.online_store import gray_state
from infra.online_store.store import OnlineStoreUnavailable, connect
from infra.tfserving.protocol import CANARY, STABLE
from model_registry.release_rules import canary_share_after
from model_registry.stages import Stage
from railyard.gray_rules import LiveFigures, bake_verdict
from railyard.settings import Settings

log = logging.getLogger(__name__)
BAKE_POLL_S = 5.0


def hold_canary(settings: Settings, version: int) -> None:
    """Before a new canary loads: no user is sent to the `canary` label, and its live figures
    start from zero. Raises when the store does not answer: a share left at 100 % from the last
    approval would send every user to a version nobody has tested yet."""
    client = connect(settings).client
    gray_state.set_canary_share(client, settings.model_name, 0.0)
    gray_state.reset_live(client, settings.model_name, CANARY, version)


def set_share_for_stage(settings: Settings, stage: Stage | None) -> None:
    """The share a version's new stage calls for (``canary_share_after``). Best effort: a stale
    share after the canary label left the version routes users to what `stable` serves anyway."""
    share = canary_share_after(stage, settings.canary_share)
    if share is not None:
        set_share(settings, share)


def set_share(settings: Settings, share: float) -> None:
    try:
        gray_state.set_canary_share(connect(settings).client, settings.model_name, share)
    except OnlineStoreUnavailable as error:
        log.warning("the canary's share of users could not be set to %s: %s", share, error)


def bake_canary(settings: Settings, version: int) -> str | None:
    """Let the canary serve its share for the bake period, watching its live figures; why it
    must be rolled back, or None when it stayed within budget (at once without a bake)."""
    budget = settings.bake_budget()
    if not budget.seconds:
        return None
    client = connect(settings).client
    deadline = time.monotonic() + budget.seconds
    while True:
        figures = gray_state.live(client, settings.model_name, CANARY, version)
        if (reason := bake_verdict(figures, budget)) is not None:
            return f"{reason} ({figures.summary()})"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(f"baked {budget.seconds:g} s within budget: {figures.summary()}")
            return None
        time.sleep(min(BAKE_POLL_S, budget.seconds / 10, remaining))


def live_figures(settings: Settings, labels: dict[str, int]) -> list[LiveFigures]:
    """The live figures of the versions the labels point at (empty when the store is down)."""
    try:
        client = connect(settings).client
        return [
            gray_state.live(client, settings.model_name, label, version)
            for label, version in sorted(labels.items(), key=lambda item: item[0] != STABLE)
        ]
    except OnlineStoreUnavailable:
        return []
