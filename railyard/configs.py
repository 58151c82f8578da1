"""The configuration each stage takes, as plain values without defaults.

``Settings`` builds every one of them (``Settings.train_config()`` and so on), so each default
is written once, in ``railyard/settings.py``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """What every kind's training loop needs (a kind's own settings are its ``Config``)."""

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    early_stopping_patience: int
    validation_fraction: float  # the newest share of the training rows: the validation window


@dataclass(frozen=True)
class ValidationBounds:
    min_rows: int
    max_rows: int
    min_positive_rate: float
    max_positive_rate: float


@dataclass(frozen=True)
class GateThresholds:
    """Absolute bounds, and change bounds against the production model (None: not checked)."""

    min_auc: float | None
    max_logloss: float | None
    min_auc_change: float | None  # challenger AUC - production AUC must be >= this
    max_logloss_change_relative: float | None  # (challenger - production) / production <= this
    min_auc_lift: float | None  # challenger AUC - the fresh baseline's AUC on the same rows must be >= this


@dataclass(frozen=True)
class SmokeBudget:
    p95_ms: float
    requests: int  # the burst: single-instance REST predictions
    concurrency: int
    tolerance: float  # served vs. offline predictions


@dataclass(frozen=True)
class BakeBudget:
    """How long a canary serves its share of users before the review, and what it may cost."""

    seconds: float
    max_error_rate: float
    max_p99_ms: float
    min_requests: int  # fewer requests say nothing yet


@dataclass(frozen=True)
class DriftThresholds:
    """(warn, block) per feature of the drift check, and per kind of distance for the rest."""

    by_feature: dict[str, tuple[float, float]]
    by_kind: dict[str, tuple[float, float]]  # js, linf, difference, day_change

    def of(self, feature: str, kind: str) -> tuple[float, float]:
        return self.by_feature.get(feature, self.by_kind[kind])


@dataclass(frozen=True)
class ScorerConfig:
    """The streaming scorer (``railyard score-stream``)."""

    batch_size: int  # requests per micro-batch: a batch is flushed when it has this many
    flush_ms: float  # or when this long passed since its first request came
    claim_idle_s: float  # a request pending this long with a stopped scorer is claimed by another
    result_ttl_s: int  # how long a request id's result marker is kept (a later duplicate gets no result)
    results_maxlen: int  # the results stream is trimmed to about this many entries
    max_movies: int  # movieIds per request
    serving_timeout_s: float  # per Predict call
    labels_ttl_s: float  # the served labels and the canary's share are read again at most this often


RANKING_MAX_CANDIDATES = 10_000  # candidates one recommendation may score (a request's and the setting's bound)


@dataclass(frozen=True)
class RankingConfig:
    """The ranking service's app (``railyard rank-server``)."""

    candidates: int  # scored per recommendation when the request names no number
    share_ttl_s: float  # the canary's share is read again at most this often (a change reaches a replica within it)
    labels_ttl_s: float  # the served labels' versions are trusted this long
    live_flush_s: float  # the live figures are written to the online store this often
