"""Point-in-time aggregates: no leakage (ties included), a time split, fresh holdout rows, the
cut-off snapshot, cold start, and one computation for offline rows and entity totals."""

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from railyard import features
from railyard.features import GENRES
from railyard.loaders import RATINGS_SCHEMA, load_dataset
from railyard.model_input import Warm
from railyard.synthetic import generate_movielens


def _ratings(rows: list[tuple[int, int, float, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row")


MOVIES = pl.DataFrame(
    {
        "movieId": [1, 2, 3, 9],
        "title": ["a", "b", "c", "z"],
        "genres": ["Comedy|Drama", "Drama", "(no genres listed)", "Western"],
    }
)
# User 1 rates movies 1 and 2 in the same second (a tie), then more; the last rows are the holdout.
TIED = _ratings(
    [
        (1, 1, 4.0, 100),
        (1, 2, 2.0, 100),
        (2, 1, 5.0, 100),
        (1, 3, 4.5, 200),
        (2, 2, 3.0, 200),
        (1, 1, 1.0, 300),
        (3, 1, 4.0, 300),
        (2, 3, 4.0, 400),
        (1, 2, 5.0, 500),
        (3, 3, 0.5, 500),
    ]
)


def _row(frame: pl.DataFrame, user: int, movie: int, ts: int) -> dict:
    matches = frame.filter((pl.col("userId") == user) & (pl.col("movieId") == movie) & (pl.col("timestamp") == ts))
    assert len(matches) == 1
    return matches.row(0, named=True)


def test_ties_at_one_timestamp_do_not_see_each_other():
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.2)
    first, tied = _row(built.train, 1, 1, 100), _row(built.train, 1, 2, 100)
    assert first["user_n"] == tied["user_n"] == first["user_rating_sum"] == 0.0
    later = _row(built.train, 1, 3, 200)
    assert later["user_n"] == 2.0  # both ratings at t=100, neither of its own second
    assert later["user_rating_sum"] == 6.0 and later["user_positives"] == 1.0
    # Movie 1 at t=300 sees the two ratings at t=100, not user 3's at the same second.
    assert _row(built.train, 1, 1, 300)["movie_n"] == 2.0


def test_time_split_keeps_the_newest_ratings_out_of_training():
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.2)
    assert built.cutoff_ts == 500
    assert built.train["timestamp"].max() < built.cutoff_ts <= built.holdout["timestamp"].min()
    assert len(built.train) + len(built.holdout) == len(TIED)
    assert built.train["label"].to_list() == [float(r >= 3.5) for r in built.train["rating"]]


def test_a_tied_cutoff_is_never_split_across_train_and_holdout():
    ratings = _ratings([(1, 1, 4.0, 10), (1, 2, 4.0, 20), (2, 1, 2.0, 20), (2, 2, 2.0, 20), (3, 1, 4.0, 20)])
    built = features.build_features(ratings, None, holdout_fraction=0.5)
    assert built.cutoff_ts == 20 and len(built.train) == 1 and len(built.holdout) == 4


def test_single_timestamp_cannot_be_split():
    with pytest.raises(ValueError, match="two distinct timestamps"):
        features.build_features(_ratings([(1, 1, 4.0, 10), (2, 1, 2.0, 10)]), None, holdout_fraction=0.5)


def test_holdout_rows_see_earlier_holdout_events_but_never_their_own_labels():
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.3)
    assert built.cutoff_ts == 400
    # User 2's rating of movie 3 at t=400 is a holdout row; movie 3's row at t=500 sees it (fresh,
    # as the online store would have it), beside the training rating at t=200.
    assert _row(built.holdout, 3, 3, 500)["movie_n"] == 2.0
    assert _row(built.holdout, 3, 3, 500)["movie_rating_sum"] == 4.5 + 4.0
    flipped = TIED.with_columns(
        pl.when(pl.col("timestamp") >= 500).then(5.5 - pl.col("rating")).otherwise(pl.col("rating")).alias("rating")
    )
    rebuilt = features.build_features(flipped, MOVIES, holdout_fraction=0.3)
    feature_columns = [*features.USER_FEATURES, *features.MOVIE_FEATURES]
    assert rebuilt.train.equals(built.train)
    assert rebuilt.holdout.select(feature_columns).equals(built.holdout.select(feature_columns))


def test_the_snapshot_holds_the_training_totals():
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.3)
    snapshot = built.user_snapshot.filter(pl.col("userId") == 2).row(0, named=True)
    assert snapshot["user_n"] == 2.0 and snapshot["user_rating_sum"] == 8.0  # t=100, t=200; not t=400
    assert snapshot["user_genre_n"][GENRES.index("Drama")] == 2.0  # movies 1 and 2 are dramas
    assert snapshot["user_genre_pos"][GENRES.index("Drama")] == 1.0  # 5.0 yes, 3.0 no


def test_cold_users_and_catalogue_only_movies_in_the_holdout():
    ratings = TIED.vstack(_ratings([(7, 9, 4.0, 500)]))  # a new user rating a movie nobody rated before
    built = features.build_features(ratings, MOVIES, holdout_fraction=0.2)
    row = _row(built.holdout, 7, 9, 500)
    assert row["user_n"] == row["user_rating_sum"] == row["movie_n"] == row["movie_positives"] == 0.0
    assert row["movie_genres"][GENRES.index("Western")] == 1.0  # genres come from movies.csv
    assert 9 in built.movie_snapshot["movieId"].to_list()
    assert 7 not in built.user_snapshot["userId"].to_list()


def test_entity_totals_are_the_aggregates_after_every_event():
    users, movies = features.aggregate_totals(TIED, MOVIES)
    user_1 = users.filter(pl.col("userId") == 1).row(0, named=True)
    assert user_1["user_n"] == 5 and user_1["user_rating_sum"] == 16.5 and user_1["user_positives"] == 3
    assert user_1["user_genre_n"][GENRES.index("Drama")] == 4  # movie 1 twice, movie 2 twice
    movie_3 = movies.filter(pl.col("movieId") == 3).row(0, named=True)
    assert (movie_3["movie_n"], movie_3["movie_rating_sum"], movie_3["movie_positives"]) == (3, 9.0, 2)
    # The totals of the training rows are the snapshot, and each entity's total is what a row
    # right after all its events would see.
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.3)
    train_users, _ = features.aggregate_totals(TIED.filter(pl.col("timestamp") < built.cutoff_ts), MOVIES)
    assert train_users.cast(dict(built.user_snapshot.schema)).sort("userId").equals(built.user_snapshot)


def test_the_latest_rating_is_the_one_of_the_greatest_timestamp_then_movie_in_any_order():
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.2)
    # User 1 rated movies 1 (4.0) and 2 (2.0) at t=100: of one second, the greater movieId is the latest.
    later = _row(built.train, 1, 3, 200)
    assert (later["user_last_rating"], later["user_last_ts"]) == (2.0, 100)
    # Ratings in one second never see each other; nothing before: zeros.
    assert _row(built.train, 1, 2, 100)["user_last_rating"] == _row(built.train, 1, 2, 100)["user_last_ts"] == 0
    assert _row(built.train, 1, 1, 300)["user_last_rating"] == 4.5  # t=200
    assert built.train.schema["user_last_ts"] == pl.Int64  # exact; the model's vector splits it
    # Order-free: the events in any order give the same rows and the same totals.
    shuffled = features.build_features(TIED.sample(fraction=1.0, shuffle=True, seed=3), MOVIES, holdout_fraction=0.2)
    assert shuffled.train.equals(built.train) and shuffled.holdout.equals(built.holdout)
    users, _ = features.aggregate_totals(TIED.reverse(), MOVIES)
    user_1 = users.filter(pl.col("userId") == 1).row(0, named=True)
    assert (user_1["user_last_rating"], user_1["user_last_ts"]) == (5.0, 500)
    assert built.user_snapshot.filter(pl.col("userId") == 1).row(0, named=True)["user_last_ts"] == 300


def test_the_input_vector_holds_a_time_as_day_and_second():
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.2)
    vectors = features.feature_matrix(built.train, features.USER_FEATURES)
    assert vectors.shape == (len(built.train), features.USER_WIDTH) and vectors.dtype == np.float32
    last_ts = features.layout("user")["user_last_ts"]
    days, seconds = vectors[:, last_ts].T
    np.testing.assert_array_equal(days * 86_400 + seconds, built.train.get_column("user_last_ts").to_numpy())


def _reference_features(ratings: pl.DataFrame, movies: pl.DataFrame) -> dict:
    """Row-by-row reference: for every row, recompute the aggregates of all earlier events."""
    genre_of = {
        m: [float(g in str(names).split("|")) for g in GENRES]
        for m, names in movies.select("movieId", "genres").iter_rows()
    }
    events = list(ratings.iter_rows(named=True))
    expected = {}
    for row in events:
        mine = [r for r in events if r["userId"] == row["userId"] and r["timestamp"] < row["timestamp"]]
        theirs = [r for r in events if r["movieId"] == row["movieId"] and r["timestamp"] < row["timestamp"]]
        genres_seen = [genre_of.get(r["movieId"], [0.0] * len(GENRES)) for r in mine]
        liked = [float(r["rating"] >= 3.5) for r in mine]
        latest = max(mine, key=lambda r: (r["timestamp"], r["movieId"]), default={"rating": 0.0, "timestamp": 0})
        expected[(row["userId"], row["movieId"], row["timestamp"])] = {
            "user_n": len(mine),
            "user_rating_sum": sum(r["rating"] for r in mine),
            "user_positives": sum(liked),
            "user_genre_n": [sum(g[i] for g in genres_seen) for i in range(len(GENRES))],
            "user_genre_pos": [sum(g[i] * y for g, y in zip(genres_seen, liked)) for i in range(len(GENRES))],
            "user_last_rating": latest["rating"],
            "user_last_ts": latest["timestamp"],
            "movie_n": len(theirs),
            "movie_rating_sum": sum(r["rating"] for r in theirs),
            "movie_positives": sum(float(r["rating"] >= 3.5) for r in theirs),
            "movie_genres": genre_of.get(row["movieId"], [0.0] * len(GENRES)),
        }
    return expected


@pytest.mark.parametrize("slice_rows", [features.HISTORY_SLICE_ROWS, 50])
def test_matches_a_row_by_row_reference_on_generated_data(tmp_path, monkeypatch, slice_rows):
    monkeypatch.setattr(features, "HISTORY_SLICE_ROWS", slice_rows)  # 50: histories built many users at a time
    generate_movielens(tmp_path / "data", users=25, movies=30, days=3, ratings_per_day=120, seed=4)
    dataset = load_dataset(tmp_path / "data")
    built = features.build_features(dataset.ratings, dataset.movies, holdout_fraction=0.25)
    expected = _reference_features(dataset.ratings, dataset.movies)
    assert len(expected) == len(built.train) + len(built.holdout) > 300
    for row in pl.concat([built.train, built.holdout]).iter_rows(named=True):
        want = expected[(row["userId"], row["movieId"], row["timestamp"])]
        for name, value in want.items():
            np.testing.assert_allclose(row[name], value, rtol=1e-5, err_msg=name)


def test_write_and_read_round_trip_with_fingerprint(tmp_path):
    generate_movielens(tmp_path / "data", users=20, movies=25, days=2, ratings_per_day=100, seed=2)
    dataset = load_dataset(tmp_path / "data")
    built = features.build_feature_set(dataset, holdout_fraction=0.2)
    features.write_feature_set(built, tmp_path / "features")
    loaded = features.read_feature_set(tmp_path / "features")
    assert loaded.train.equals(built.train) and loaded.holdout.equals(built.holdout)
    assert loaded.movie_snapshot.equals(built.movie_snapshot) and loaded.cutoff_ts == built.cutoff_ts
    assert loaded.fingerprint == built.fingerprint and len(built.fingerprint) == 64
    assert features.build_feature_set(dataset, holdout_fraction=0.3).fingerprint != built.fingerprint
    (tmp_path / "features" / "meta.json").unlink()
    with pytest.raises(FileNotFoundError, match="meta.json"):
        features.read_feature_set(tmp_path / "features")


def test_building_histories_in_slices_changes_nothing(tmp_path, monkeypatch):
    generate_movielens(tmp_path / "data", users=40, movies=30, days=3, ratings_per_day=150, seed=6)
    dataset = load_dataset(tmp_path / "data")
    whole = features.build_features(dataset.ratings, dataset.movies, holdout_fraction=0.25)
    monkeypatch.setattr(features, "HISTORY_SLICE_ROWS", 7)
    sliced = features.build_features(dataset.ratings, dataset.movies, holdout_fraction=0.25)
    for part in ("train", "holdout", "user_snapshot", "movie_snapshot"):
        assert getattr(sliced, part).equals(getattr(whole, part)), part


def test_ids_spread_over_all_of_int64_give_the_same_features(tmp_path):
    """Hashed ids are too far apart to pack with a row number into one sort key: the stable-sort
    path must give what small ids give."""
    generate_movielens(tmp_path / "data", users=40, movies=30, days=3, ratings_per_day=150, seed=6)
    dataset = load_dataset(tmp_path / "data")
    spread = (pl.col("userId") - 20) * 2**57, (pl.col("movieId") - 20) * 2**57  # same order, span ~2^62
    hashed_ratings = dataset.ratings.with_columns(spread[0].alias("userId"), spread[1].alias("movieId"))
    hashed_movies = dataset.movies.with_columns(spread[1].alias("movieId"))
    small = features.build_features(dataset.ratings, dataset.movies, holdout_fraction=0.25)
    hashed = features.build_features(hashed_ratings, hashed_movies, holdout_fraction=0.25)
    assert hashed.train["userId"].min() < 0 < hashed.train["userId"].max()
    for part in ("train", "holdout", "user_snapshot", "movie_snapshot"):
        ids = [c for c in ("userId", "movieId") if c in getattr(small, part).columns]
        assert getattr(hashed, part).drop(ids).equals(getattr(small, part).drop(ids)), part


def test_the_holdout_owns_its_buffers_so_the_training_rows_can_be_freed():
    """The flow keeps the holdout through training and lets the training rows go: a zero-copy
    slice of the whole build would keep every row's buffers alive (7 GB at 25M ratings)."""
    built = features.build_features(TIED, MOVIES, holdout_fraction=0.3)
    kept = built.without_training_rows()
    assert kept.train.height == 0 and kept.holdout.equals(built.holdout) and 0 < kept.holdout.height < 20
    for column in kept.holdout.to_arrow().columns:
        for chunk in column.chunks:
            if pa.types.is_primitive(chunk.type):
                assert chunk.offset == 0 and chunk.buffers()[1].size == len(chunk) * chunk.type.bit_width // 8, column


@pytest.mark.parametrize("slice_rows", [features.HISTORY_SLICE_ROWS, 7])
def test_building_only_the_kept_training_rows_gives_those_rows_of_the_whole_build(tmp_path, monkeypatch, slice_rows):
    """A warm start builds the rows it reads (and the whole holdout), their aggregates still over
    every earlier rating: the same values as those rows of a build of every row."""
    monkeypatch.setattr(features, "HISTORY_SLICE_ROWS", slice_rows)
    generate_movielens(tmp_path / "data", users=40, movies=30, days=4, ratings_per_day=150, seed=6)
    dataset = load_dataset(tmp_path / "data")
    whole = features.build_features(dataset.ratings, dataset.movies, holdout_fraction=0.25)
    since = int(whole.train["timestamp"].quantile(0.7))
    warm = Warm(since=since, replay=0.2, seed=3)
    kept = features.build_features(dataset.ratings, dataset.movies, holdout_fraction=0.25, keep=warm.keeps)
    assert 0 < kept.train.height < whole.train.height and kept.train["timestamp"].min() < since  # new rows and replay
    assert kept.train.equals(warm.of(whole.train))
    for part in ("holdout", "user_snapshot", "movie_snapshot"):
        assert getattr(kept, part).equals(getattr(whole, part)), part
    assert (kept.cutoff_ts, kept.priors) == (whole.cutoff_ts, whole.priors)


@pytest.mark.parametrize("keep", [False, True])
def test_the_snapshots_are_each_keys_totals_over_the_training_rows(tmp_path, monkeypatch, keep):
    """The build reads each key's training totals off the pass that gives the rows their
    aggregates: the same as summing the training rows on their own (keys seen only in the
    holdout left out; ties at the cut-off on the holdout's side)."""
    monkeypatch.setattr(features, "HISTORY_SLICE_ROWS", 11)
    generate_movielens(tmp_path / "data", users=40, movies=30, days=4, ratings_per_day=150, seed=8)
    dataset = load_dataset(tmp_path / "data")
    rows, genres = features.labelled(dataset.ratings), features.movie_genres(dataset.movies)
    keeps = Warm(since=int(rows["timestamp"].quantile(0.6)), replay=0.1, seed=2).keeps if keep else None
    built = features.build_features(dataset.ratings, dataset.movies, holdout_fraction=0.25, keep=keeps)
    train = rows.filter(pl.col("timestamp") < built.cutoff_ts)
    users, movies = features.snapshots(
        features.user_totals(train, genres), features.movie_totals(train, genres), genres
    )
    assert built.user_snapshot.equals(users) and built.movie_snapshot.equals(movies)
    holdout_only = set(built.holdout["userId"].to_list()) - set(train["userId"].to_list())
    assert holdout_only and not holdout_only & set(built.user_snapshot["userId"].to_list())
