"""An empty online store filled by a process of its own while the run goes on (a real Valkey, a
real child process): it fills the store and reads its skew, a stopped one leaves the store as it
was and free to fill, two at once fill it once, a failed one is one clear error."""

from __future__ import annotations

import time

import polars as pl
import pytest

from infra.online_store import keys
from infra.online_store.background_fill import BackgroundFill, BackgroundFillFailed
from tests.support.online_store import assert_store_matches, movies_frame, ratings_frame

BIG = 400_000  # ratings enough for the fill to be under way when it is stopped


def _started(store, timeout_s: float = 60.0) -> None:
    """Wait until a fill holds the rebuild lock (it is writing its namespace)."""
    deadline = time.monotonic() + timeout_s
    while not store.client.exists(keys.REBUILD_LOCK):
        assert time.monotonic() < deadline, "the fill never started its rebuild"
        time.sleep(0.05)


def test_an_empty_store_is_filled_in_the_background_and_its_skew_read_from_there(online_store, tmp_path):
    movies, batch = movies_frame(40), ratings_frame(3_000, users=60, movies=45, seed=1)
    fill = BackgroundFill.start(batch, movies, tmp_path / "fill", sample_size=50, seed=3)
    built, (users, films) = fill.wait(120)
    assert built and (users.entity, films.entity) == ("user", "movie")
    assert users.sampled == 50 and films.sampled > 0 and users.skewed == films.skewed == 0
    assert_store_matches(online_store, batch, movies)
    assert online_store.state()["events_applied"] == batch.height
    assert not (tmp_path / "fill" / "ratings.parquet").exists()  # the rows handed over go once it ends


def test_a_stopped_fill_leaves_the_store_empty_and_free_to_fill(online_store, tmp_path):
    batch = ratings_frame(BIG, users=5_000, movies=2_000, seed=2)
    fill = BackgroundFill.start(batch, None, tmp_path / "fill", sample_size=50, seed=3)
    _started(online_store)
    fill.stop()
    assert fill.process.returncode == 128 + 15  # it ended on SIGTERM, through its own unwinding
    assert online_store.namespace() is None
    assert not online_store.client.keys(keys.NAMESPACES + "*")  # the half-written namespace went
    assert not online_store.client.exists(keys.REBUILD_LOCK)
    small = ratings_frame(200, users=10, movies=20, seed=4)
    online_store.rebuild(small, None)
    assert_store_matches(online_store, small, None)


def test_a_second_fill_waits_for_the_first_and_measures_the_store_it_filled(online_store, tmp_path):
    batch = ratings_frame(BIG, users=5_000, movies=2_000, seed=5)
    first = BackgroundFill.start(batch, None, tmp_path / "first", sample_size=50, seed=3)
    _started(online_store)
    second = BackgroundFill.start(batch, None, tmp_path / "second", sample_size=50, seed=3)
    built_second, reports = second.wait(300)
    built_first, _ = first.wait(300)
    assert built_first and not built_second  # filled once
    assert all(report.skewed == 0 for report in reports)
    assert online_store.state()["events_applied"] == batch.height


def test_a_failed_fill_is_one_clear_error_and_the_store_stays_empty(online_store, tmp_path):
    batch = ratings_frame(100, users=10, movies=20, seed=6)
    missing = batch.with_columns(rating=pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("rating")))
    fill = BackgroundFill.start(missing, None, tmp_path / "fill", sample_size=50, seed=3)
    with pytest.raises(BackgroundFillFailed, match="ratings with missing values.*fill.log"):
        fill.wait(120)
    assert online_store.namespace() is None
