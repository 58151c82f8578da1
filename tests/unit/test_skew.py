"""The skew check's arithmetic: what counts as skew, sampling, missing entities."""

import numpy as np
import polars as pl

from railyard import features, skew
from railyard.loaders import load_dataset
from railyard.synthetic import generate_movielens
from tests.unit.test_features import MOVIES, TIED


def test_identical_aggregates_have_no_skew_and_a_changed_count_or_sum_is_named():
    users, _ = features.aggregate_totals(TIED, MOVIES)
    ids = users.get_column("userId").to_numpy()
    offline = skew.offline_vectors(users, features.USER_FEATURES)
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


def test_the_sample_is_reproducible_uniform_and_the_same_drawn_whole_or_from_partitions():
    many = pl.DataFrame({"userId": np.arange(10_000), "n": np.arange(10_000)})
    first, second = (skew.sample_totals(many, "userId", 100, seed=3) for _ in range(2))
    assert first.equals(second) and first.height == 100 and first.get_column("userId").is_unique().all()
    assert first.get_column("userId").is_sorted()
    assert first.get_column("n").to_list() == first.get_column("userId").to_list()  # whole rows
    assert 3_000 < first.get_column("userId").mean() < 7_000  # spread over the ids, not the first ones
    assert not first.equals(skew.sample_totals(many, "userId", 100, seed=4))

    # Partitions holding disjoint ids each draw theirs; the sample of those is the whole's.
    parts = [many.filter(pl.col("userId") % 7 == part) for part in range(7)]
    drawn = [skew.sample_totals(part, "userId", 100, seed=3) for part in parts]
    assert skew.sample_totals(pl.concat(drawn), "userId", 100, seed=3).equals(first)

    users, _ = features.aggregate_totals(TIED, MOVIES)
    assert skew.sample_totals(users, "userId", 10, seed=3).get_column("userId").to_list() == [1, 2, 3]


def test_the_sampled_totals_are_the_sample_of_every_entitys_totals(tmp_path):
    """The skew check totals only the sampled entities' rows: the same figures as the sample of
    every entity's totals."""
    from infra.online_store.consistency import offline_samples

    generate_movielens(tmp_path, users=40, movies=30, days=3, ratings_per_day=100, seed=2)
    dataset = load_dataset(tmp_path)
    ratings, genres = dataset.ratings, features.movie_genres(dataset.movies)
    last = int(ratings.get_column("timestamp").sort()[len(ratings) // 2])
    users, movies = offline_samples(ratings, genres, last, 10, seed=5)
    seen = features.labelled(ratings.filter(pl.col("timestamp") <= last))
    assert users.equals(skew.sample_totals(features.user_totals(seen, genres), "userId", 10, seed=5))
    assert movies.equals(skew.sample_totals(features.movie_totals(seen, genres), "movieId", 10, seed=5))
    assert users.height == movies.height == 10 < min(seen["userId"].n_unique(), seen["movieId"].n_unique())
