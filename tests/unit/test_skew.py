"""The skew check's arithmetic: what counts as skew, sampling, missing entities."""

import numpy as np
import polars as pl

from railyard import features, skew
from tests.unit.test_features import MOVIES, TIED


def test_identical_aggregates_have_no_skew_and_a_changed_count_or_sum_is_named():
    users, _ = features.aggregate_totals(TIED, MOVIES)
    ids = users.get_column("userId").to_numpy()
    offline = skew.offline_vectors(users, "userId", ids, features.USER_FEATURES)
    assert offline.shape == (3, features.USER_WIDTH)
    assert skew.compare("user", ids, offline.copy(), offline).skewed == 0

    online = offline.copy()
    online[0, 0] += 1  # one event counted twice
    online[2, 1] += 1e-6  # a rating sum off by a little, beyond the tolerance
    online[1, 1] += 1e-12  # within it
    report = skew.compare("user", ids, online, offline)
    assert (report.sampled, report.skewed) == (3, 2) and report.share == 2 / 3
    assert report.max_difference == 1.0
    assert report.examples[0] == "user 1: online n=6 sum=16.5 pos=3 vs. offline n=5 sum=16.5 pos=3"
    assert "2 of 3 sampled users differ (66.67%)" in report.summary()


def test_ids_without_offline_events_are_zero_and_sampling_is_reproducible():
    users, _ = features.aggregate_totals(TIED, MOVIES)
    vectors = skew.offline_vectors(users, "userId", np.array([2, 999]), features.USER_FEATURES)
    assert vectors[1].tolist() == [0.0] * features.USER_WIDTH and vectors[0][0] == 3.0
    many = pl.DataFrame({"userId": np.arange(1000)})
    first, second = (skew.sample_ids(many, "userId", 10, seed=3) for _ in range(2))
    assert len(first) == 10 and first.tolist() == second.tolist() and len(set(first.tolist())) == 10
    assert skew.sample_ids(users, "userId", 10, seed=3).tolist() == [1, 2, 3]
