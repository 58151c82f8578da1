"""The benchmark's two feature implementations agree row for row, so the speed-up compares equal work."""

import numpy as np
import polars as pl
import pytest

from bench.pandas_features import build_features_pandas, compare
from railyard import features
from railyard.loaders import load_dataset
from railyard.synthetic import generate_movielens
from tests.support.online_store import EVERY_KIND, declare


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "data"
    generate_movielens(path, users=300, movies=400, days=5, ratings_per_day=1_500, seed=12)
    loaded = load_dataset(path)
    # Coarse seconds force many ties: several ratings of one user or movie at the same timestamp.
    ratings = loaded.ratings.with_columns((pl.col("timestamp") // 600 * 600).alias("timestamp")).unique(
        ["userId", "movieId", "timestamp"], keep="first", maintain_order=True
    )
    return ratings, loaded.movies


def test_polars_and_pandas_features_agree_row_for_row(data):
    ratings, movies = data
    ours = features.build_features(ratings, movies, holdout_fraction=0.2)
    theirs = build_features_pandas(ratings.to_pandas(), movies.to_pandas(), holdout_fraction=0.2)
    compare(ours, theirs)
    assert len(ours.train) > 5_000 and len(ours.holdout) > 1_000
    assert ours.train["user_n"].max() > 10 and np.ptp(np.stack(ours.holdout["user_genre_pos"].to_numpy())) > 1
    assert ours.holdout["user_last_rating"].n_unique() > 5 and (ours.holdout["user_last_ts"] > 0).mean() > 0.5


def test_every_kind_of_declaration_agrees_with_pandas(data, monkeypatch):
    """Genre vectors of ratings and of the latest event, a movie's latest values (ties: the
    greater userId), a time times a flag: two implementations, the same rows."""
    declare(monkeypatch, *EVERY_KIND)
    ratings, movies = data
    ours = features.build_features(ratings, movies, holdout_fraction=0.2)
    compare(ours, build_features_pandas(ratings.to_pandas(), movies.to_pandas(), holdout_fraction=0.2))
    assert ours.holdout["movie_last_liked_ts"].n_unique() > 100 and ours.holdout["movie_last_rating"].n_unique() > 5


def test_compare_catches_a_single_differing_value(data):
    ratings, movies = data
    ours = features.build_features(ratings, movies, holdout_fraction=0.2)
    train, holdout = build_features_pandas(ratings.to_pandas(), movies.to_pandas(), holdout_fraction=0.2)
    train.loc[17, "user_genre_pos_3"] += 1
    with pytest.raises(AssertionError, match="train.user_genre_pos"):
        compare(ours, (train, holdout))
    train.loc[17, "user_genre_pos_3"] -= 1
    holdout.loc[5, "user_last_ts"] += 1  # a time is compared to the second
    with pytest.raises(AssertionError, match="holdout.user_last_ts"):
        compare(ours, (train, holdout))
