"""Drift between training windows (railyard/drift.py): each injected upstream fault is named by
the feature that should catch it, at the default thresholds, and ordinary generated days pass.

The world: 50 generated days (sessions mode, 3,000 ratings a day, 1,000 users arriving over the
period). A day's data is every rating up to the end of that day; the check compares it with the
data up to the day before, as the daily retrain compares a run with production."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from railyard import drift
from railyard.loaders import load_dataset
from railyard.settings import Settings
from railyard.synthetic import generate_movielens
from tests.support.approx import assert_close

DAY = drift.DAY_S
ORDINARY_DAYS = range(30, 50)  # 20 days, each checked against the day before
LIMITS = Settings().drift_limits()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("drift-world")
    generate_movielens(out, users=1_000, movies=1_500, days=50, ratings_per_day=3_000, seed=7, fmt="parquet")
    dataset = load_dataset(out)
    return dataset.ratings, dataset.movies, int(dataset.ratings.get_column("timestamp").min()) // DAY


def up_to(ratings: pl.DataFrame, first_day: int, day: int) -> pl.DataFrame:
    return ratings.filter(pl.col("timestamp") < (first_day + day + 1) * DAY)


def verdict(new: pl.DataFrame, reference: pl.DataFrame, movies: pl.DataFrame) -> drift.Verdict:
    return drift.compare(
        drift.statistics(new, movies, 1), drift.statistics(reference, movies, 1), LIMITS, "the day before"
    )


def test_ordinary_generated_days_raise_no_warning(world):
    """The false-alarm rate of the default thresholds over 20 ordinary days: 0 of 20 (over six
    worlds of 600 or 1,000 users, seeds 3, 7 and 11: one warning in 120 days, no block)."""
    assert_no_alarm(*world)


def test_ordinary_days_of_a_world_of_fewer_users_raise_no_warning(tmp_path):
    """600 users: fewer sessions a day, so noisier per-user figures (the worst of the six worlds)."""
    generate_movielens(tmp_path, users=600, movies=1_500, days=50, ratings_per_day=3_000, seed=3, fmt="parquet")
    dataset = load_dataset(tmp_path)
    assert_no_alarm(dataset.ratings, dataset.movies, int(dataset.ratings.get_column("timestamp").min()) // DAY)


def assert_no_alarm(ratings: pl.DataFrame, movies: pl.DataFrame, first: int) -> None:
    alarms = [
        (day, verdict(up_to(ratings, first, day), up_to(ratings, first, day - 1), movies).summary())
        for day in ORDINARY_DAYS
    ]
    raised = [alarm for alarm in alarms if not alarm[1].startswith("no drift")]
    assert raised == [], f"false alarms on {len(raised)} of {len(alarms)} ordinary days: {raised}"


def split_day(ratings: pl.DataFrame, first: int, day: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The data up to ``day`` as (everything before it, the day itself)."""
    data = up_to(ratings, first, day)
    starts = (first + day) * DAY
    return data.filter(pl.col("timestamp") < starts), data.filter(pl.col("timestamp") >= starts)


def genre_halved(ratings, movies, first, day):
    """A logging change loses every other rating of a Drama."""
    before, today = split_day(ratings, first, day)
    drama = movies.filter(pl.col("genres").str.contains("Drama")).get_column("movieId")
    lost = pl.col("movieId").is_in(drama.implode()) & (pl.int_range(pl.len()) % 2 == 1)
    return pl.concat([before, today.filter(~lost)])


def bot(ratings, movies, first, day):
    """A new user rates 2,000 films 5.0 in one day."""
    before, today = split_day(ratings, first, day)
    n = 2_000
    rows = pl.DataFrame(
        {
            "userId": [int(ratings.get_column("userId").max()) + 1] * n,
            "movieId": np.arange(1, n + 1),
            "rating": [5.0] * n,
            "timestamp": (first + day) * DAY + np.arange(n) * 40,
        },
        schema=ratings.schema,
    )
    return pl.concat([before, today, rows])


def day_missing(ratings, movies, first, day):
    """The day before lost all its events (compared with the data up to two days before)."""
    data = up_to(ratings, first, day)
    return data.filter(pl.col("timestamp") // DAY != first + day - 1)


def label_shifted(ratings, movies, first, day):
    """20 % of the day's ratings turn from negative (< 3.5) to 4.0: the label rate +20 points."""
    before, today = split_day(ratings, first, day)
    today = today.with_row_index()
    flipped = today.filter(pl.col("rating") < 3.5).sample(int(0.2 * today.height), seed=1).get_column("index")
    today = today.with_columns(
        pl.when(pl.col("index").is_in(flipped.implode())).then(4.0).otherwise(pl.col("rating")).alias("rating")
    )
    return pl.concat([before, today.drop("index")])


def new_movies_doubled(ratings, movies, first, day):
    """As many more of the day's ratings as were on new movies land on films never seen before."""
    before, today = split_day(ratings, first, day)
    share = drift.statistics(pl.concat([before, today]), movies, 1)["span"]["new_movie_share"]
    today = today.with_row_index()
    moved = today.sample(round(share * today.height), seed=2).get_column("index")
    today = today.with_columns(
        pl.when(pl.col("index").is_in(moved.implode()))
        .then(pl.col("movieId") + 1_000_000)
        .otherwise(pl.col("movieId"))
        .alias("movieId")
    )
    return pl.concat([before, today.drop("index")])


@pytest.mark.parametrize(
    ("fault", "feature", "level", "reference_day"),
    [
        (genre_halved, "genres", "block", -1),
        (bot, "userId", "block", -1),
        (day_missing, "events_per_day", "block", -2),
        (label_shifted, "label_rate", "warn", -1),
        (new_movies_doubled, "new_movie_share", "warn", -1),
    ],
    ids=["genre-halved", "bot", "day-missing", "label-plus-20-points", "new-movie-share-doubled"],
)
@pytest.mark.parametrize("day", [35, 42])
def test_each_fault_is_named_by_its_feature(world, fault, feature, level, reference_day, day):
    ratings, movies, first = world
    result = verdict(fault(ratings, movies, first, day), up_to(ratings, first, day + reference_day), movies)
    named = {m.feature: m for m in result.crossed()}
    assert feature in named, result.summary()
    assert drift.LEVELS.index(named[feature].level) >= drift.LEVELS.index(level), named[feature].line()


def test_the_bot_and_the_missing_day_block_the_run(world):
    ratings, movies, first = world
    result = verdict(bot(ratings, movies, first, 40), up_to(ratings, first, 39), movies)
    error = drift.DataDrift(result)
    assert result.level == "block" and error.exit_code == 2
    assert "userId: linf" in str(error) and "> block 0.3" in str(error)
    assert "RAILYARD_DRIFT_OVERRIDE" in error.next_step


def test_statistics_are_small_json_with_a_schema(world):
    ratings, movies, first = world
    stats = drift.statistics(up_to(ratings, first, 49), movies, 1)
    text = json.dumps(stats)
    assert json.loads(text) == stats and len(text) < 20_000
    assert stats["schema"] == drift.SCHEMA
    assert stats["window"]["rows"] == 50 * 3_000 and len(stats["window"]["events_per_day"]) == 50
    span = stats["span"]
    assert span["rows"] == 3_000 and span["first_day"] == span["last_day"] == stats["window"]["last_day"]
    assert span["columns"]["rating"]["missing"] == 0 and sum(span["columns"]["rating"]["histogram"]["counts"]) == 3_000
    assert {"user_n", "user_genre_n", "movie_n"} <= span["features"].keys() and "user_last_ts" not in span["features"]


def test_without_movies_there_are_no_genres(world):
    ratings, _, first = world
    span = drift.statistics(up_to(ratings, first, 40), None, 1)["span"]
    assert "genres" not in span["columns"] and "user_genre_n" not in span["features"] and "user_n" in span["features"]


def test_parts_of_whole_keys_merge_into_the_same_statistics(world):
    """What the Dask build does with its partitions, in one process: any split by user and by movie."""
    ratings, movies, first = world
    data = up_to(ratings, first, 40)
    whole = drift.statistics(data, movies, 1)
    hook = drift.PartitionedStatistics(drift.genre_table(movies), 1).planned(
        drift.events_per_day(data.get_column("timestamp"))
    )
    users = [hook.users(data.filter(pl.col("userId") % 3 == part)) for part in range(3)]
    movie_parts = [hook.movies(data.filter(pl.col("movieId") % 4 == part)) for part in range(4)]
    assert_close(hook.merged(users, movie_parts), whole)


@pytest.mark.parametrize(
    ("fault", "worst"), [(day_missing, "events_per_day"), (label_shifted, "label_rate"), (genre_halved, "genres")]
)
def test_the_picture_shows_the_worst_features_two_distributions(world, tmp_path, fault, worst):
    ratings, movies, first = world
    reference = drift.statistics(up_to(ratings, first, 38 if fault is day_missing else 39), movies, 1)
    new = drift.statistics(fault(ratings, movies, first, 40), movies, 1)
    result = drift.compare(new, reference, LIMITS, "production version 1")
    assert result.measures[0].feature == worst
    for feature in (worst, "rating", "user_n"):  # and a raw column's and an aggregate's histogram
        labels, p, q = drift.distributions(feature, new, reference)
        assert len(labels) == len(p) == len(q) > 0
    picture = drift.plot(result, new, reference, tmp_path / "drift.png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_thresholds_come_from_the_settings(monkeypatch):
    monkeypatch.setenv("RAILYARD_DRIFT_THRESHOLDS", '{"userId": [0.5, 0.9], "js": [0.6, 0.8]}')
    limits = Settings().drift_limits()
    assert limits.of("userId", "linf") == (0.5, 0.9)
    assert limits.of("user_n", "js") == (0.6, 0.8)
    assert limits.of("genres", "linf") == (0.05, 0.1)


def test_a_threshold_below_its_warn_is_refused(monkeypatch):
    monkeypatch.setenv("RAILYARD_DRIFT_THRESHOLDS", '{"userId": [0.5, 0.1]}')
    with pytest.raises(ValueError, match="warn <= block"):
        Settings()


def test_distances():
    assert drift.js_distance(np.array([1.0, 0]), np.array([0, 1.0]))[0] == pytest.approx(1.0)
    assert drift.js_distance(np.array([1.0, 1]), np.array([2.0, 2]))[0] == pytest.approx(0.0)
    assert drift.linf_distance({"a": 0.5, "b": 0.1}, {"a": 0.2}) == (pytest.approx(0.3), "a")
