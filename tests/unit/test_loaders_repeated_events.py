"""The event stream's sink may write an event twice (a batch redelivered cut differently): the
Parquet loader drops exact repeats and says how many; a conflicting repeat stays for validation."""

import logging

import polars as pl

from railyard.loaders import RATINGS_SCHEMA, load_dataset


def _write(folder, day, name, rows):
    (folder / "ratings" / f"date={day}").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema=RATINGS_SCHEMA, orient="row").write_parquet(folder / "ratings" / f"date={day}" / name)


def test_exact_repeats_across_files_are_dropped_and_counted(tmp_path, caplog):
    _write(tmp_path, "2026-01-01", "part-a.parquet", [(1, 10, 4.0, 100), (2, 10, 3.5, 101), (3, 11, 1.0, 102)])
    _write(tmp_path, "2026-01-01", "part-b.parquet", [(2, 10, 3.5, 101), (3, 11, 1.0, 102), (4, 12, 5.0, 103)])
    with caplog.at_level(logging.WARNING, "railyard.loaders"):
        dataset = load_dataset(tmp_path)
    assert dataset.duplicates_dropped == 2
    assert sorted(dataset.ratings.rows()) == [
        (1, 10, 4.0, 100),
        (2, 10, 3.5, 101),
        (3, 11, 1.0, 102),
        (4, 12, 5.0, 103),
    ]
    assert "dropped 2 rating rows identical to another in all four columns" in caplog.text


def test_a_conflicting_repeat_reaches_validation(tmp_path):
    _write(tmp_path, "2026-01-01", "part-a.parquet", [(1, 10, 4.0, 100)])
    _write(tmp_path, "2026-01-01", "part-b.parquet", [(1, 10, 2.0, 100)])
    dataset = load_dataset(tmp_path)
    assert dataset.duplicates_dropped == 0
    assert sorted(dataset.ratings.rows()) == [(1, 10, 2.0, 100), (1, 10, 4.0, 100)]
