"""Warm starts: how a run chooses to train (each reason ``auto`` falls back to a full retrain),
which rows a warm start reads, and what a kind's tables carry over."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from railyard import model_input
from railyard.kinds.base import Previous, WarmStartMismatch
from railyard.warm_start import DAY_S, Replay, WarmStartRefused, describe, plan_start

CUTOFF = 1_800_000_000
BASE_CUTOFF = CUTOFF - DAY_S
PRODUCTION = {
    "train_cutoff": str(BASE_CUTOFF),
    "full_trained_at": str(CUTOFF - 3 * DAY_S),
    "feature_code": "3-abc",
    "kind_fingerprint": "fresh_wd-123",
}


def _plan(choice="auto", **changed):
    facts = dict(
        cutoff_ts=CUTOFF,
        production=4,
        lineage=PRODUCTION,
        feature_code="3-abc",
        kind_fingerprint="fresh_wd-123",
        kind_can_warm=True,
        drift_level="pass",
        full_retrain_days=7,
    )
    return plan_start(choice, **(facts | changed))


def test_auto_warm_starts_from_production_on_the_ratings_since_its_cut_off():
    plan = _plan()
    assert (plan.mode, plan.base_version, plan.since) == ("warm", 4, BASE_CUTOFF)
    assert plan.full_trained_at == CUTOFF - 3 * DAY_S  # the full retrain it descends from, not this run
    lineage = plan.lineage(CUTOFF, "3-abc", "fresh_wd-123")
    assert lineage["warm_from"] == "4" and lineage["train_cutoff"] == str(CUTOFF)
    assert describe(lineage).startswith("warm-started from version 4 (RAILYARD_TRAINING_START=auto")


@pytest.mark.parametrize(
    ("changed", "reason"),
    [
        ({"production": None, "lineage": {}}, "there is no production version to start from"),
        ({"kind_can_warm": False}, "the model kind has no warm_start"),
        ({"lineage": {"code_version": "railyard-0.1.0"}}, "was trained before warm starts were recorded"),
        ({"feature_code": "3-def"}, "the feature code changed since version 4 (3-abc -> 3-def)"),
        ({"kind_fingerprint": "fresh_wd-456"}, "the model kind or its settings changed since version 4"),
        ({"cutoff_ts": BASE_CUTOFF}, "no ratings newer than version 4's training cut-off"),
        ({"drift_level": "warn"}, "the drift check warned"),
        ({"drift_level": "block"}, "the drift check blocked (overridden)"),
        ({"full_retrain_days": 3}, "3.0 days of data since the last full retrain (RAILYARD_FULL_RETRAIN_DAYS=3)"),
    ],
    ids=[
        "no-production",
        "kind-cannot",
        "older-version",
        "feature-code",
        "kind-changed",
        "no-new-data",
        "drift-warned",
        "drift-blocked",
        "days-passed",
    ],
)
def test_auto_falls_back_to_a_full_retrain(changed, reason):
    plan = _plan(**changed)
    assert plan.mode == "full" and reason in plan.reason, plan.reason
    assert plan.full_trained_at == changed.get("cutoff_ts", CUTOFF)  # a full retrain starts the count again
    assert plan.lineage(CUTOFF, "f", "k").get("warm_from") is None


def test_full_is_full_and_warm_is_refused_in_words_when_it_cannot_be_done():
    assert _plan("full").mode == "full"
    with pytest.raises(WarmStartRefused, match="cannot warm-start: there is no production version") as refused:
        _plan("warm", production=None, lineage={})
    assert refused.value.exit_code == 2
    # Asked for explicitly, a warm start goes ahead past a drift warning or the full-retrain period.
    assert _plan("warm", drift_level="warn", full_retrain_days=1).mode == "warm"
    with pytest.raises(ValueError, match="use one of full, warm, auto"):
        _plan("lukewarm")


def test_the_replay_sample_is_a_fixed_share_of_the_older_ratings_whatever_their_order():
    rng = np.random.default_rng(3)
    users, movies = rng.integers(1, 10_000, 200_000), rng.integers(1, 5_000, 200_000)
    times = rng.integers(0, 10 * DAY_S, 200_000)
    picked = model_input.replayed(users, movies, times, 0.1, seed=7)
    assert 0.095 < picked.mean() < 0.105
    order = rng.permutation(len(users))
    assert np.array_equal(model_input.replayed(users[order], movies[order], times[order], 0.1, seed=7), picked[order])
    assert not model_input.replayed(users, movies, times, 0.0, seed=7).any()
    assert model_input.replayed(users, movies, times, 1.0, seed=7).all()
    warm = model_input.Warm(since=9 * DAY_S, replay=0.1, seed=7)
    assert np.array_equal(warm.keeps(users, movies, times), (times >= 9 * DAY_S) | picked)
    frame = pl.DataFrame({"userId": users, "movieId": movies, "timestamp": times, "row": np.arange(len(users))})
    assert warm.of(frame).get_column("row").to_list() == np.flatnonzero(warm.keeps(users, movies, times)).tolist()


def test_a_plan_says_which_training_rows_it_reads():
    older, new = np.full(900_000, BASE_CUTOFF - DAY_S), np.full(50_000, BASE_CUTOFF)
    plan = _plan().sized(np.concatenate([older, new]), Replay(most_share=0.5, per_new_row=2.0, least_rows=0))
    assert plan.rows(seed=7) == model_input.Warm(since=BASE_CUTOFF, replay=100_000 / 900_000, seed=7)
    full = _plan("full")
    assert full.sized(older, Replay(0.5, 2.0, 0)) == full and full.rows(seed=7) is None  # every training row


def _replayed_rows(older: int, new: int, replay: Replay) -> float:
    timestamps = np.concatenate([np.zeros(older, np.int64), np.full(new, BASE_CUTOFF)])
    return replay.share(timestamps, BASE_CUTOFF) * older


@pytest.mark.parametrize(
    ("older", "new", "replayed", "why"),
    [
        (24_000_000, 400_000, 400_000, "one replayed row per new row: the history's size does not matter"),
        (2_400_000, 400_000, 240_000, "at most 10 % of the older rows"),
        (24_000_000, 100, 100_000, "at least the floor, for a small day"),
        (50_000, 100, 5_000, "the share caps the floor on a small history"),
        (0, 400_000, 0, "nothing older to replay"),
    ],
)
def test_the_replay_follows_the_new_rows_between_a_floor_and_a_share_of_the_history(older, new, replayed, why):
    assert _replayed_rows(older, new, Replay(most_share=0.1, per_new_row=1.0, least_rows=100_000)) == pytest.approx(
        replayed
    ), why


class _Variable:
    def __init__(self, path, value):
        self.path, self.value = path, np.array(value, np.float32)
        self.shape = self.value.shape

    def numpy(self):
        return self.value.copy()

    def assign(self, value):
        self.value = np.array(value, np.float32)


class _Model:
    def __init__(self, *variables):
        self.trainable_weights = list(variables)


class _Context:
    def __init__(self, user_ids, movie_ids):
        self.user_ids, self.movie_ids = np.array(user_ids), np.array(movie_ids)


def test_a_table_carries_the_rows_of_known_ids_and_keeps_fresh_rows_for_new_ones():
    old_table = np.arange(4 * 2, dtype=np.float32).reshape(4, 2)  # OOV row, then users 10, 20, 30
    previous = Previous(
        3, {"emb/embeddings": old_table, "dense/kernel": np.ones((2, 1))}, np.array([10, 20, 30]), np.array([])
    )
    fresh = np.full((5, 2), -1.0)  # OOV row, then users 5, 10, 25, 30 (20 is gone, 5 and 25 are new)
    model = _Model(_Variable("emb/embeddings", fresh), _Variable("dense/kernel", np.zeros((2, 1))))
    figures = previous.carry(model, _Context([5, 10, 25, 30], []), {"emb/embeddings": "user"})
    table = model.trainable_weights[0].value
    assert np.array_equal(table[0], old_table[0])  # the out-of-vocabulary row
    assert np.array_equal(table[2], old_table[1]) and np.array_equal(table[4], old_table[3])  # 10 and 30
    assert (table[1] == -1).all() and (table[3] == -1).all()  # 5 and 25: as built
    assert (model.trainable_weights[1].value == 1).all()
    assert figures == {"user_rows_carried": 2, "user_rows_new": 2}


def test_weights_that_do_not_fit_are_refused_by_name():
    previous = Previous(3, {"dense/kernel": np.ones((3, 1))}, np.array([1]), np.array([1]))
    with pytest.raises(WarmStartMismatch, match=r"'dense/kernel': \(2, 1\) now, \(3, 1\) in version 3"):
        previous.carry(_Model(_Variable("dense/kernel", np.zeros((2, 1)))), _Context([1], [1]), {})
    with pytest.raises(WarmStartMismatch, match="version 3 has no weight 'other/kernel'"):
        previous.carry(_Model(_Variable("other/kernel", np.zeros((3, 1)))), _Context([1], [1]), {})
