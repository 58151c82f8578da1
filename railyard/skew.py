"""Train/serve skew: the online store's aggregates against the offline ones, for the same events.

Both sides keep the same raw aggregates, every one declared in ``railyard.feature_spec``, so for
one set of events they must agree in every slot of the model's input vector: counts, times and
latest values exactly, rating sums within ``TOLERANCE`` (sums of half stars are exact in
float64). An entity whose vector differs anywhere is skewed; the share of skewed entities in a
sample is the figure a retrain records and gates on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from railyard import features as F
from railyard.errors import RailyardError

TOLERANCE = 1e-9
_EXAMPLES = 5


class FeatureSkew(RailyardError):
    """The online store serves other features than the offline build computes: nothing trained."""

    next_step = (
        "see why the store and the batch data differ (`railyard status` shows the stream's lag and dead "
        "letters); `railyard ingest --rebuild` rebuilds the store from the batch data"
    )


@dataclass(frozen=True)
class SkewReport:
    entity: str  # "user" or "movie"
    sampled: int
    skewed: int
    max_difference: float
    examples: tuple[str, ...]  # the first few skewed entities, online vs. offline

    @property
    def share(self) -> float:
        return self.skewed / self.sampled if self.sampled else 0.0

    def summary(self) -> str:
        head = f"{self.skewed} of {self.sampled} sampled {self.entity}s differ ({self.share:.2%})"
        return head + (": " + "; ".join(self.examples) if self.examples else "")


def sample_totals(totals: pl.DataFrame, key: str, size: int, seed: int) -> pl.DataFrame:
    """Up to ``size`` rows of ``totals``: those whose ``key`` hashes lowest under ``seed``, sorted
    by key. A uniform sample that partitions holding disjoint keys can each draw: the sample of
    their samples put together is the sample of the whole."""
    rank = pl.col(key).hash(seed=seed)
    return totals.sort(rank, key).head(size).sort(key)


def offline_vectors(totals: pl.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """The aggregates of ``totals``' rows in float64, in the order of ``names``: the layout the
    online store returns."""
    return F.feature_matrix(totals, names, np.float64)


def compare(entity: str, ids: np.ndarray, online: np.ndarray, offline: np.ndarray) -> SkewReport:
    """Skew of ``online`` against ``offline`` (one row per id, same columns)."""
    difference = np.abs(np.asarray(online, np.float64) - np.asarray(offline, np.float64))
    skewed = np.flatnonzero((difference > TOLERANCE).any(axis=1))
    examples = tuple(
        f"{entity} {ids[row]}: online {_short(online[row])} vs. offline {_short(offline[row])}"
        for row in skewed[:_EXAMPLES]
    )
    return SkewReport(
        entity=entity,
        sampled=len(ids),
        skewed=len(skewed),
        max_difference=float(difference.max()) if difference.size else 0.0,
        examples=examples,
    )


def _short(vector: np.ndarray) -> str:
    """count, rating sum, positives: enough to see what went wrong."""
    count, total, positives = (float(value) for value in vector[:3])
    return f"n={count:g} sum={total:g} pos={positives:g}"
