"""The synthetic MovieLens generator: format, reproducibility, uniqueness, learnable structure, sessions."""

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from railyard.loaders import MOVIELENS_GENRES as GENRES
from railyard.loaders import NO_GENRES, load_dataset
from railyard.synthetic import generate_movielens, session_statistics
from tasks.data import DEFAULT_DATA

SMALL = dict(users=80, movies=120, days=4, ratings_per_day=300)
START = date(2026, 3, 1)
START_TS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp())
DAY = 86_400
MODES = ("sessions", "stationary")


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """A data set per mode, big enough for the structure checks (10 days, 10k ratings)."""
    generated = {}
    for mode in MODES:
        out = tmp_path_factory.mktemp(mode) / "data"
        summary = generate_movielens(
            out, users=200, movies=300, days=10, ratings_per_day=1000, seed=11, start_date=START, mode=mode
        )
        generated[mode] = summary, pl.read_csv(out / "ratings.csv"), pl.read_csv(out / "movies.csv")
    return generated


@pytest.fixture(params=MODES)
def world(worlds, request):
    return worlds[request.param]


@pytest.fixture(scope="module")
def default_ratings(tmp_path_factory):
    """The data set `railyard run` generates on first use."""
    out = tmp_path_factory.mktemp("default") / "data"
    generate_movielens(out, **DEFAULT_DATA)
    return load_dataset(out).ratings


def _files(root):
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in files}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_seed_gives_identical_bytes(tmp_path, fmt, mode):
    generate_movielens(tmp_path / "a", seed=5, fmt=fmt, mode=mode, **SMALL)
    generate_movielens(tmp_path / "b", seed=5, fmt=fmt, mode=mode, **SMALL)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first == second
    assert "movies.csv" in first and len(first) == (2 if fmt == "csv" else SMALL["days"] + 1)


def test_different_seeds_give_different_data(tmp_path):
    generate_movielens(tmp_path / "a", seed=5, **SMALL)
    generate_movielens(tmp_path / "b", seed=6, **SMALL)
    assert (tmp_path / "a" / "ratings.csv").read_bytes() != (tmp_path / "b" / "ratings.csv").read_bytes()
    assert (tmp_path / "a" / "movies.csv").read_bytes() != (tmp_path / "b" / "movies.csv").read_bytes()


def test_ratings_file_format_and_ranges(world):
    summary, ratings, _ = world
    header = (summary.out_dir / "ratings.csv").read_text().splitlines()[:2]
    assert header[0] == "userId,movieId,rating,timestamp"
    assert header[1].split(",")[2] in {f"{half / 2:.1f}" for half in range(1, 11)}  # MovieLens writes "4.0"
    assert ratings.schema == pl.Schema(
        {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
    )
    assert ratings.height == 10_000 and ratings.null_count().sum_horizontal().item() == 0
    assert set(ratings["rating"].unique().to_list()) <= {half / 2 for half in range(1, 11)}
    assert ratings["rating"].n_unique() == 10  # every half-star step from 0.5 to 5.0 occurs
    assert ratings["userId"].min() >= 1 and ratings["userId"].max() <= 200
    assert ratings["movieId"].min() >= 1 and ratings["movieId"].max() <= 300


def test_movies_file_has_movielens_genres(tmp_path):
    generate_movielens(tmp_path, users=10, movies=2000, days=1, ratings_per_day=50, seed=2)
    movies = pl.read_csv(tmp_path / "movies.csv")
    assert movies.columns == ["movieId", "title", "genres"]
    assert movies["movieId"].to_list() == list(range(1, 2001))
    assert movies["title"].str.contains(r"^Movie \d+ \(\d{4}\)$").all()
    genre_lists = [value.split("|") for value in movies["genres"] if value != NO_GENRES]
    assert 0 < movies.height - len(genre_lists) < 100  # a few movies have no genres
    assert all(1 <= len(names) <= 3 and names == sorted(set(names)) for names in genre_lists)
    assert {name for names in genre_lists for name in names} == set(GENRES)


def test_user_movie_timestamp_is_unique_and_a_user_rates_a_movie_once_a_day(world):
    _, ratings, _ = world
    assert not ratings.select("userId", "movieId", "timestamp").is_duplicated().any()
    per_day = ratings.with_columns(day=pl.col("timestamp") // DAY).select("userId", "movieId", "day")
    assert not per_day.is_duplicated().any()


def test_timestamps_cover_the_days_in_order(world):
    summary, ratings, _ = world
    timestamps = ratings["timestamp"]
    assert timestamps.is_sorted()
    assert START_TS <= timestamps.min() and timestamps.max() < START_TS + 10 * DAY
    per_day = ratings.group_by((pl.col("timestamp") - START_TS) // DAY).len()
    assert sorted(per_day["len"].to_list()) == [1000] * 10
    assert (summary.first_ts, summary.last_ts) == (timestamps.min(), timestamps.max())


def test_summary_describes_the_files(world):
    summary, ratings, _ = world
    assert summary.n_ratings == ratings.height
    assert summary.n_users == ratings["userId"].n_unique()
    assert summary.n_movies == ratings["movieId"].n_unique()
    assert summary.positive_rate == pytest.approx((ratings["rating"] >= 3.5).mean())
    assert 0.45 <= summary.positive_rate <= 0.65


def test_user_taste_persists_over_time(worlds):
    _, ratings, _ = worlds["stationary"]  # in sessions mode most users rate on one day only
    halves = ratings.with_columns(late=pl.col("timestamp") >= START_TS + 5 * DAY)
    means = (
        halves.group_by("userId", "late")
        .agg(pl.col("rating").mean())
        .pivot(on="late", index="userId", values="rating")
        .drop_nulls()
    )
    assert means.height > 150
    assert np.corrcoef(means["false"], means["true"])[0, 1] > 0.3


@pytest.mark.parametrize(("mode", "top_user_share"), [("sessions", 0.18), ("stationary", 0.3)])
def test_popularity_is_zipf_like_and_activity_is_skewed(worlds, mode, top_user_share):
    _, ratings, _ = worlds[mode]
    per_movie = np.sort(ratings.group_by("movieId").len()["len"].to_numpy())[::-1]
    assert per_movie[:30].sum() / ratings.height > 0.35  # top 10% of 300 movies; uniform would give ~0.1
    per_user = np.sort(ratings.group_by("userId").len()["len"].to_numpy())[::-1]
    # top 10% of users; uniform would give ~0.1 (a session is capped at a quarter of the catalogue)
    assert per_user[:20].sum() / ratings.height > top_user_share


def test_personal_taste_beats_movie_popularity_on_later_days(worlds):
    """Smoothed per-user + per-movie positive rates beat the per-movie rate alone on a time split."""
    _, ratings, _ = worlds["stationary"]
    late = pl.col("timestamp") >= START_TS + 8 * DAY
    personal_auc, popularity_auc = _personal_and_popularity_auc(ratings, late)
    assert personal_auc > popularity_auc + 0.05


def test_personal_taste_beats_movie_popularity_later_in_a_session(worlds):
    """In sessions mode the later half of each user's ratings is predictable from the earlier half."""
    _, ratings, _ = worlds["sessions"]
    late = pl.int_range(pl.len()).over("userId", order_by="timestamp") >= pl.len().over("userId") // 2
    personal_auc, popularity_auc = _personal_and_popularity_auc(ratings, late)
    assert personal_auc > popularity_auc + 0.05


def _personal_and_popularity_auc(ratings: pl.DataFrame, late: pl.Expr) -> tuple[float, float]:
    labeled = ratings.with_columns(label=(pl.col("rating") >= 3.5).cast(pl.Float64), late=late)
    train = labeled.filter(~pl.col("late"))
    holdout = labeled.filter(pl.col("late"))
    prior = train["label"].mean()

    def log_odds(key):
        rate = (pl.col("label").sum() + 5 * prior) / (pl.len() + 5)
        return train.group_by(key).agg((rate / (1 - rate)).log().alias(f"{key}_odds"))

    scored = (
        holdout.join(log_odds("movieId"), on="movieId", how="left")
        .join(log_odds("userId"), on="userId", how="left")
        .fill_null(0.0)  # unseen in training: even odds
    )
    popularity_auc = roc_auc_score(scored["label"], scored["movieId_odds"])
    personal_auc = roc_auc_score(scored["label"], scored["movieId_odds"] + scored["userId_odds"])
    return personal_auc, popularity_auc


def test_parquet_layout_has_one_partition_per_day(tmp_path):
    summary = generate_movielens(tmp_path, seed=1, fmt="parquet", start_date=START, **SMALL)
    partitions = sorted(path.name for path in (tmp_path / "ratings").iterdir())
    assert partitions == [f"date=2026-03-0{day}" for day in range(1, 5)]
    first_day = pl.read_parquet(tmp_path / "ratings" / "date=2026-03-01" / "part-0.parquet")
    assert first_day.columns == ["userId", "movieId", "rating", "timestamp"]
    assert first_day.height == SMALL["ratings_per_day"]
    assert first_day["timestamp"].max() < START_TS + DAY
    assert (tmp_path / "movies.csv").is_file() and not (tmp_path / "ratings.csv").exists()
    assert summary.n_ratings == 4 * SMALL["ratings_per_day"]


def test_refuses_to_overwrite_existing_ratings(tmp_path):
    generate_movielens(tmp_path, seed=1, **SMALL)
    before = (tmp_path / "ratings.csv").read_bytes()
    with pytest.raises(FileExistsError, match="ratings.csv already exists"):
        generate_movielens(tmp_path, seed=2, fmt="parquet", **SMALL)
    assert (tmp_path / "ratings.csv").read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["movies.csv", "ratings.csv"]  # no temp files


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(users=0), "users must be at least 1"),
        (dict(days=0), "days must be at least 1"),
        (dict(users=10, movies=10, ratings_per_day=60), "ratings_per_day=60 is too many for 10 users x 10 movies"),
        (dict(fmt="json"), "fmt must be 'csv' or 'parquet'"),
        (dict(mode="weekly"), "mode must be 'sessions' or 'stationary'"),
        (dict(users=1, movies=200_000, ratings_per_day=90_000), "too many for 1 users rating once a second"),
    ],
)
def test_rejects_bad_arguments(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        generate_movielens(tmp_path, **{**SMALL, "seed": 1, **overrides})
    assert not (tmp_path / "ratings.csv").exists()


def test_an_interrupted_run_leaves_no_ratings_behind(tmp_path, monkeypatch):
    """`railyard run` regenerates data when ratings.csv is missing: a half-written file must never exist."""
    from railyard import synthetic

    real_generate_day = synthetic._generate_day
    calls = []

    def fail_on_third_day(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_generate_day(*args)

    monkeypatch.setattr(synthetic, "_generate_day", fail_on_third_day)
    for fmt in ("csv", "parquet"):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            generate_movielens(tmp_path, seed=1, fmt=fmt, **SMALL)
        assert sorted(path.name for path in tmp_path.iterdir()) == ["movies.csv"]


def test_default_data_looks_like_movielens_on_a_time_split(default_ratings):
    """On the pipeline's 80/20 time split, as in public MovieLens: users rate in one sitting, most
    holdout users are new, and yet almost every holdout rating follows one by the same user."""
    stats = session_statistics(default_ratings, holdout_fraction=0.2)
    assert stats["median_user_span_s"] < DAY
    assert stats["holdout_new_user_share"] >= 0.6
    assert stats["holdout_rows_with_history_share"] >= 0.95


def test_session_statistics_on_a_hand_made_table():
    ratings = pl.DataFrame(
        {
            "userId": [1, 1, 2, 2, 1, 3, 3, 3],
            "movieId": [1, 2, 1, 3, 3, 1, 2, 3],
            "rating": [4.0] * 8,
            "timestamp": [0, 10, 20, 30, 40_000, 50_000, 50_000, 50_010],
        }
    )
    # cut-off 40_000: holdout users 1 (rated before) and 3 (new); user 3's two ratings at 50_000 are its first
    assert session_statistics(ratings, holdout_fraction=0.5) == {
        "median_user_span_s": 10.0,  # user 1 spans 40_000 s, users 2 and 3 span 10 s
        "holdout_new_user_share": 0.5,
        "holdout_rows_with_history_share": 0.5,
    }


def test_a_users_timestamps_strictly_increase(default_ratings):
    steps = default_ratings.sort("userId", "timestamp").select(pl.col("timestamp").diff().over("userId"))
    assert steps["timestamp"].drop_nulls().min() >= 1


def test_users_arrive_in_id_order_and_rate_mostly_in_one_sitting(default_ratings):
    days = (
        default_ratings.with_columns(day=pl.col("timestamp") // DAY)
        .group_by("userId", "day")
        .agg(n=pl.len(), span=pl.col("timestamp").max() - pl.col("timestamp").min())
        .sort("userId", "day")
    )
    first = days.group_by("userId", maintain_order=True).first()
    assert first["day"].is_sorted() and first["day"].n_unique() > 25  # arrivals spread over the 30 days
    assert first["n"].min() >= 15  # a first session is long enough that first ratings are rare
    assert 0.5 < days.group_by("userId").len()["len"].eq(1).mean() < 0.9  # most never come back
    later = days.join(first.select("userId", first_day="day"), on="userId").filter(pl.col("day") > pl.col("first_day"))
    assert later.height > 100 and later["n"].median() < first["n"].median()  # returns are shorter
    assert 10 * 60 < first["span"].median() < 4 * 3600  # a session lasts minutes to hours


def test_new_movies_keep_arriving(default_ratings):
    days = default_ratings.with_columns(day=pl.col("timestamp") // DAY - pl.col("timestamp").min() // DAY)
    movie_day = days.group_by("movieId").agg(pl.col("day").min())
    catalogue = DEFAULT_DATA["movies"]
    assert days.filter(pl.col("day") == 0)["movieId"].max() < 0.85 * catalogue  # the newest ids are not out yet
    newest = movie_day.filter(pl.col("movieId") > 0.9 * catalogue)
    assert newest.height > 0.8 * 0.1 * catalogue and newest["day"].min() > 0
