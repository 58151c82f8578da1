"""Warm starts: whether a run trains from scratch or starts from the production version.

``RAILYARD_TRAINING_START`` (or the flow's ``training_start``):

- ``full``: from scratch on every training row;
- ``warm``: from the production version's weights (the kind's ``warm_start``: known ids keep
  their rows, new ids get fresh ones) on the rows since that version's training cut-off and a
  replay sample of the older ones (``Replay``: sized to the new rows, so a day's warm start costs
  the same whatever the history); refused when it cannot be done (no production version, another
  kind or feature code, no new rows, ...);
- ``auto`` (the default): warm, unless it cannot be done or the drift check warned or blocked
  (an overridden block), or ``RAILYARD_FULL_RETRAIN_DAYS`` days of data passed since the
  training cut-off of the last full retrain the production version descends from: then full.

Either way the candidate goes through the same gate, on the same fresh holdout, against the same
production model. The version's lineage says how it was trained (``LINEAGE``), and the review
request says so. Days are counted in data time (the training cut-offs), so a backfill of old
days decides as the daily runs did.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from railyard.errors import Refused
from railyard.kinds.base import Previous
from railyard.model_input import Warm

CHOICES = ("full", "warm", "auto")
STATE_FILE = "assets.extra/railyard_vocabularies.npz"  # the ids a version's tables are indexed by
LINEAGE_FILE = "assets.extra/railyard_training.json"  # how the version was trained (``LINEAGE``)
DAY_S = 86_400
# Lineage tags (beside the version's others) a later warm start reads, and what the review shows.
LINEAGE = (
    "training_start",
    "start_reason",
    "warm_from",
    "train_cutoff",
    "full_trained_at",
    "feature_code",
    "kind_fingerprint",
)


class WarmStartRefused(Refused):
    """RAILYARD_TRAINING_START=warm, and this run cannot warm-start."""

    next_step = "set RAILYARD_TRAINING_START=auto (warm when it can, else from scratch) or full"


@dataclass(frozen=True)
class Replay:
    """How many of the older training rows a warm start replays beside the new ones:
    ``per_new_row`` for each new row, at least ``least_rows``, at most ``most_share`` of them
    (``RAILYARD_WARM_REPLAY_*``). Sized to the new rows, a warm day costs the same whatever the
    history (a fixed 10 % of 24M older ratings was 1.96M replayed rows beside 0.4M new ones); the
    floor keeps a small day (a hundred ratings) from pulling the model towards it alone."""

    most_share: float
    per_new_row: float
    least_rows: int

    @classmethod
    def of(cls, settings) -> Replay:
        return cls(settings.warm_replay_share, settings.warm_replay_per_new_row, settings.warm_replay_min_rows)

    def share(self, train_timestamps: np.ndarray, since: int) -> float:
        """The share of the training rows older than ``since`` to replay."""
        new = int(np.count_nonzero(train_timestamps >= since))
        older = len(train_timestamps) - new
        if older == 0:
            return 0.0
        return min(self.most_share, max(self.least_rows, self.per_new_row * new) / older)


@dataclass(frozen=True)
class StartPlan:
    mode: str  # "full" or "warm"
    reason: str
    full_trained_at: int  # the training cut-off of the last full retrain (this one's, when full)
    base_version: int | None = None  # warm: the production version it starts from
    since: int | None = None  # warm: that version's training cut-off; rows from it on are new
    replay_share: float = 0.0  # warm: the share of the older training rows replayed (``sized``)

    def sized(self, train_timestamps: np.ndarray, replay: Replay) -> StartPlan:
        """The plan with its replay share, from the training rows' timestamps (full: as it is)."""
        return replace(self, replay_share=replay.share(train_timestamps, self.since)) if self.mode == "warm" else self

    def rows(self, seed: int) -> Warm | None:
        """The training rows a warm start reads (None: from scratch, every training row)."""
        return Warm(self.since, self.replay_share, seed) if self.mode == "warm" else None

    def how(self) -> dict[str, str]:
        """How the version is trained, as its lineage says (``describe`` puts it in words)."""
        warm = {"warm_from": str(self.base_version)} if self.mode == "warm" else {}
        return {"training_start": self.mode, "start_reason": self.reason} | warm

    def lineage(self, cutoff_ts: int, feature_code: str, kind_fingerprint: str) -> dict[str, str]:
        """Everything a later run's plan reads of this version (``LINEAGE``)."""
        return self.how() | {
            "train_cutoff": str(cutoff_ts),
            "full_trained_at": str(self.full_trained_at),
            "feature_code": feature_code,
            "kind_fingerprint": kind_fingerprint,
        }


def plan_start(
    choice: str,
    *,
    cutoff_ts: int,
    production: int | None,
    lineage: Mapping[str, str],
    feature_code: str,
    kind_fingerprint: str,
    kind_can_warm: bool,
    drift_level: str | None,
    full_retrain_days: int,
) -> StartPlan:
    """How this run trains: ``choice`` (one of ``CHOICES``) against what the production version's
    ``lineage`` records and this run's data (``cutoff_ts``: its training cut-off), code and drift."""
    if choice not in CHOICES:
        raise ValueError(f"training start {choice!r}: use one of {', '.join(CHOICES)}")
    if choice == "full":
        return StartPlan("full", "RAILYARD_TRAINING_START=full", cutoff_ts)
    impossible = _why_not_warm(production, lineage, cutoff_ts, feature_code, kind_fingerprint, kind_can_warm)
    if impossible is not None:
        if choice == "warm":
            raise WarmStartRefused(f"cannot warm-start: {impossible}")
        return StartPlan("full", impossible, cutoff_ts)
    last_full = int(lineage["full_trained_at"])
    if choice == "auto":
        if drift_level in ("warn", "block"):
            said = "warned" if drift_level == "warn" else "blocked (overridden)"
            return StartPlan("full", f"the drift check {said}: the data changed", cutoff_ts)
        days = (cutoff_ts - last_full) / DAY_S
        if days >= full_retrain_days:
            return StartPlan(
                "full",
                f"{days:.1f} days of data since the last full retrain (RAILYARD_FULL_RETRAIN_DAYS={full_retrain_days})",
                cutoff_ts,
            )
    since = int(lineage["train_cutoff"])
    reason = f"RAILYARD_TRAINING_START={choice}: the ratings since {since} and a replay sample of the older ones"
    return StartPlan("warm", reason, last_full, base_version=production, since=since)


def _why_not_warm(
    production: int | None,
    lineage: Mapping[str, str],
    cutoff_ts: int,
    feature_code: str,
    kind_fingerprint: str,
    kind_can_warm: bool,
) -> str | None:
    if production is None:
        return "there is no production version to start from"
    if not kind_can_warm:
        return "the model kind has no warm_start"
    if any(key not in lineage for key in ("train_cutoff", "full_trained_at", "feature_code", "kind_fingerprint")):
        return f"production version {production} was trained before warm starts were recorded"
    if lineage["feature_code"] != feature_code:
        return f"the feature code changed since version {production} ({lineage['feature_code']} -> {feature_code})"
    if lineage["kind_fingerprint"] != kind_fingerprint:
        return f"the model kind or its settings changed since version {production}"
    if int(lineage["train_cutoff"]) >= cutoff_ts:
        return f"no ratings newer than version {production}'s training cut-off"
    return None


def describe(lineage: Mapping[str, str]) -> str:
    """How a version was trained, in words ("" for one trained before warm starts were recorded)."""
    if lineage.get("training_start") == "warm":
        return f"warm-started from version {lineage['warm_from']} ({lineage['start_reason']})"
    if lineage.get("training_start") == "full":
        return f"trained from scratch ({lineage['start_reason']})"
    return ""


def write_lineage(export_dir: Path, lineage: Mapping[str, str]) -> None:
    """Keep how the version was trained with it: a stored version released by a later run says so too."""
    path = Path(export_dir) / LINEAGE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(lineage), indent=2, sort_keys=True))


def read_lineage(export_dir: Path) -> dict[str, str]:
    path = Path(export_dir) / LINEAGE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_state(export_dir: Path, user_ids: np.ndarray, movie_ids: np.ndarray) -> None:
    """Keep the vocabularies a version's tables are indexed by with the version."""
    path = Path(export_dir) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        np.savez(out, user_ids=np.asarray(user_ids, np.int64), movie_ids=np.asarray(movie_ids, np.int64))


def load_previous(saved_model_dir: Path, version: int) -> Previous:
    """A stored version's trained weights (by variable path) and vocabularies."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_dir))
    weights = {variable.name.removesuffix(":0"): variable.numpy() for variable in loaded.trainable_variables}
    with np.load(Path(saved_model_dir) / STATE_FILE) as state:
        return Previous(version, weights, state["user_ids"], state["movie_ids"])
