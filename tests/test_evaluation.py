import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss

from railyard.evaluation import absolute_gate, classification_metrics, evaluate_scores, plot_roc


def test_metrics_match_reference_definitions():
    labels = np.array([0, 0, 1, 1, 1, 0])
    scores = np.array([0.1, 0.6, 0.7, 0.9, 0.4, 0.2])
    metrics = classification_metrics(labels, scores)
    # 9 positive/negative pairs, 8 ranked correctly (0.4 < 0.6 is the miss).
    assert metrics["auc"] == pytest.approx(8 / 9)
    assert metrics["logloss"] == pytest.approx(log_loss(labels, scores))
    assert metrics["accuracy"] == pytest.approx(4 / 6)


def test_extreme_scores_keep_log_loss_finite():
    metrics = classification_metrics(np.array([0, 1]), np.array([1.0, 0.0]))
    assert np.isfinite(metrics["logloss"]) and metrics["auc"] == 0.0


def test_single_class_holdout_is_a_clear_error():
    with pytest.raises(ValueError, match="single class"):
        classification_metrics(np.ones(5), np.linspace(0, 1, 5))


def test_baseline_is_the_movies_training_positive_rate():
    holdout = pl.DataFrame({"label": [1.0, 0.0, 1.0, 0.0], "movie_pos": [0.9, 0.1, 0.2, 0.8]})
    result = evaluate_scores(holdout, np.array([0.9, 0.1, 0.8, 0.2]))
    assert result.metrics["auc"] == 1.0
    assert result.metrics["baseline_auc"] == pytest.approx(3 / 4)  # 0.2 < 0.8 is the miss
    assert result.metrics["rows"] == 4 and result.metrics["positive_rate"] == 0.5


def test_roc_plot_is_a_png(tmp_path):
    holdout = pl.DataFrame({"label": [1.0, 0.0, 1.0, 0.0], "movie_pos": [0.9, 0.1, 0.2, 0.8]})
    path = plot_roc(evaluate_scores(holdout, np.array([0.9, 0.1, 0.8, 0.2])), tmp_path / "roc.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_blesses_only_when_every_threshold_passes():
    good = {"auc": 0.8, "logloss": 0.5}
    assert absolute_gate(good, min_auc=0.7, max_logloss=0.6).blessed
    decision = absolute_gate({"auc": 0.65, "logloss": 0.5}, min_auc=0.7, max_logloss=0.6)
    assert not decision.blessed
    assert "auc=0.6500 fails >= 0.7" in decision.reason
    assert [c.passed for c in decision.checks] == [False, True]


def test_gate_without_thresholds_refuses_to_bless():
    decision = absolute_gate({"auc": 0.99, "logloss": 0.01}, min_auc=None, max_logloss=None)
    assert not decision.blessed and "no thresholds" in decision.reason
