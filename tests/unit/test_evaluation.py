import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score, roc_curve

from railyard.configs import GateThresholds
from railyard.evaluation import (
    LIFT,
    Holdout,
    classification_metrics,
    evaluate_scores,
    gate,
    plot_roc,
    roc,
    side_by_side,
    side_by_side_markdown,
)
from railyard.features import smoothed


def test_metrics_match_reference_definitions():
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.6, 0.7, 0.9, 0.4, 0.2])
    metrics = classification_metrics(labels, scores)
    # 9 positive/negative pairs, 8 ranked correctly (0.4 < 0.6 is the miss).
    assert metrics["auc"] == pytest.approx(8 / 9)
    assert metrics["logloss"] == pytest.approx(log_loss(labels, scores))
    assert metrics["accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("distinct", [3, 50, 100_000])  # many ties, some, almost none
def test_one_sort_gives_sklearns_roc_curve_auc_and_average_precision(distinct):
    rng = np.random.default_rng(distinct)
    scores = rng.integers(0, distinct, 20_000) / distinct
    labels = (rng.random(20_000) < 0.3 + 0.4 * scores).astype(np.float32)
    curve = roc(labels, scores)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)
    assert curve.auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert curve.average_precision == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert classification_metrics(labels, scores)["auc"] == pytest.approx(curve.auc, abs=1e-12)


def test_extreme_scores_keep_log_loss_finite():
    metrics = classification_metrics(np.array([0, 1]), np.array([1.0, 0.0]))
    assert np.isfinite(metrics["logloss"]) and metrics["auc"] == 0.0


def test_single_class_holdout_is_a_clear_error():
    with pytest.raises(ValueError, match="single class"):
        classification_metrics(np.ones(5), np.linspace(0, 1, 5))


def _holdout() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "label": [1.0, 0.0, 1.0, 0.0],
            "user_n": [4.0, 4.0, 0.0, 10.0],
            "user_positives": [4.0, 0.0, 0.0, 5.0],
            "movie_n": [10.0, 10.0, 10.0, 10.0],
            "movie_positives": [9.0, 1.0, 2.0, 8.0],
        }
    )


def test_baselines_score_the_fresh_smoothed_rates():
    priors = {"mean": 3.5, "pos": 0.5}
    result = evaluate_scores(
        Holdout.of(_holdout(), priors), np.array([0.9, 0.1, 0.8, 0.2]), np.array([0.9, 0.8, 0.1, 0.2])
    )
    assert result.metrics["auc"] == 1.0 and result.metrics["auc_frozen"] == 0.5
    # Popularity: the movie's smoothed positive rate, (9+2.5)/15 > (8+2.5)/15 > (2+2.5)/15 > (1+2.5)/15.
    assert result.metrics["baseline_auc"] == pytest.approx(3 / 4)  # 2/10 < 8/10 is the miss
    # User + movie: user 3 (no history, rate 0.5) lifts the third row over the fourth's 7.5/15 user rate.
    assert result.metrics["fresh_baseline_auc"] == pytest.approx(3 / 4)
    user = smoothed(np.array([4.0, 0.0, 0.0, 5.0]), np.array([4.0, 4.0, 0.0, 10.0]), 0.5)
    movie = smoothed(np.array([9.0, 1.0, 2.0, 8.0]), 10.0, 0.5)
    logit = np.log(user / (1 - user)) + np.log(movie / (1 - movie))
    np.testing.assert_allclose(result.curves["user + movie baseline"], logit)
    assert result.metrics["rows"] == 4 and result.metrics["positive_rate"] == 0.5
    assert result.metrics[LIFT] == pytest.approx(1 - 3 / 4)  # the model's AUC over the fresh baseline's


def test_roc_plot_is_a_png(tmp_path):
    scores = np.array([0.9, 0.1, 0.8, 0.2])
    path = plot_roc(
        evaluate_scores(Holdout.of(_holdout(), {"mean": 3.5, "pos": 0.5}), scores, scores), tmp_path / "roc.png", "t"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


ABSOLUTE = GateThresholds(
    min_auc=0.7, max_logloss=0.6, min_auc_change=None, max_logloss_change_relative=None, min_auc_lift=None
)
WITH_CHANGE = GateThresholds(
    min_auc=0.7, max_logloss=0.6, min_auc_change=-0.01, max_logloss_change_relative=0.02, min_auc_lift=None
)
WITH_LIFT = GateThresholds(
    min_auc=0.6, max_logloss=0.69, min_auc_change=-0.01, max_logloss_change_relative=0.02, min_auc_lift=0.005
)


def _metrics(auc: float, logloss: float, fresh_baseline_auc: float = 0.6, rows: int = 18_000) -> dict:
    return {"auc": auc, "logloss": logloss, "fresh_baseline_auc": fresh_baseline_auc, "rows": rows}


def test_gate_blesses_only_when_every_threshold_passes():
    good = _metrics(0.8, 0.5)
    decision = gate(good, ABSOLUTE)
    assert decision.blessed and "no production model yet" in decision.reason
    decision = gate(_metrics(0.65, 0.5), ABSOLUTE)
    assert not decision.blessed
    assert "auc=0.6500 fails >= 0.7" in decision.reason
    assert [c.passed for c in decision.checks] == [False, True]


def test_gate_without_thresholds_refuses_to_bless():
    decision = gate(_metrics(0.99, 0.01), GateThresholds(None, None, None, None, None))
    assert not decision.blessed and "no thresholds" in decision.reason


def test_a_model_that_does_not_beat_the_fresh_baseline_by_the_margin_is_refused():
    """The absolute thresholds pass and there is no production model: the lift check still applies,
    and the reason says what it compared with."""
    weak = gate(_metrics(0.712, 0.6, fresh_baseline_auc=0.709), WITH_LIFT)
    assert not weak.blessed
    assert weak.reason == (
        "auc_lift_vs_fresh_baseline=0.0030 fails >= 0.005 "
        "(fresh baseline (user + movie rates) AUC 0.7090 on the same 18000 holdout rows)"
    )
    (lift,) = [c for c in weak.checks if c.name == LIFT]
    assert lift.value == pytest.approx(0.003) and not lift.passed and lift.versus is None
    assert gate(_metrics(0.72, 0.6, fresh_baseline_auc=0.709), WITH_LIFT).blessed


def test_change_thresholds_compare_with_the_production_model():
    production = {"auc": 0.80, "logloss": 0.50}
    better = gate(_metrics(0.805, 0.49), WITH_CHANGE, baseline_metrics=production, baseline_version=3)
    assert better.blessed and better.baseline_version == 3 and "production version 3" in better.reason
    assert {c.name: c.versus for c in better.checks} == {  # each check says what it compares with
        "auc": None,
        "logloss": None,
        "auc_change_vs_production": 3,
        "logloss_relative_change_vs_production": 3,
    }
    assert {c.name: c.compared_with for c in better.checks}["auc_change_vs_production"] == (
        "production version 3 on the same 18000 holdout rows"
    )

    worse = gate(_metrics(0.78, 0.52), WITH_CHANGE, baseline_metrics=production, baseline_version=3)
    assert not worse.blessed  # absolute bounds pass, the regression against production does not
    failed = {c.name: round(c.value, 4) for c in worse.checks if not c.passed}
    assert failed == {"auc_change_vs_production": -0.02, "logloss_relative_change_vs_production": 0.04}


def test_change_thresholds_alone_still_gate_when_production_exists():
    only_change = GateThresholds(
        min_auc=None, max_logloss=None, min_auc_change=0.0, max_logloss_change_relative=None, min_auc_lift=None
    )
    assert not gate(_metrics(0.9, 0.3), only_change).blessed  # nothing to compare: no thresholds apply
    assert gate(_metrics(0.9, 0.3), only_change, baseline_metrics={"auc": 0.85, "logloss": 0.3}).blessed


def test_the_model_both_baselines_and_production_side_by_side():
    metrics = {"auc": 0.74, "logloss": 0.6, "auc_frozen": 0.65, "baseline_auc": 0.61, "fresh_baseline_auc": 0.71}
    rows = side_by_side(metrics, {"auc": 0.73, "logloss": 0.61}, 4)
    assert [(row["scored"], row["auc"], row["lift"]) for row in rows] == [
        ("model (fresh features: served)", 0.74, 0.03),
        ("model (features frozen at the cut-off)", 0.65, -0.06),
        ("popularity baseline (movie rate)", 0.61, -0.1),
        ("fresh baseline (user + movie rates)", 0.71, 0.0),
        ("production version 4", 0.73, 0.02),
    ]
    table = side_by_side_markdown(rows).splitlines()
    assert table[2] == "| model (fresh features: served) | 0.7400 | 0.6000 | +0.0300 |"
    assert table[4] == "| popularity baseline (movie rate) | 0.6100 |  | -0.1000 |"
    assert len(side_by_side(metrics)) == 4  # no production model yet
