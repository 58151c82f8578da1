"""The event stream's sink may write an event twice (a batch redelivered cut differently), and a
producer may rate an event twice: the loaders keep the first row of each event in stream order
(the event rules' first-wins rule) and say how many they dropped."""

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
    assert "2 repeated it in all four columns, 0 rated an event an earlier row rated differently" in caplog.text
    assert dataset.file_rows == ()  # rows were dropped: which file each kept row came from is not kept


def test_with_no_row_dropped_the_data_set_says_which_rows_each_file_holds(tmp_path):
    _write(tmp_path, "2026-01-01", "part-a.parquet", [(1, 10, 4.0, 100), (2, 10, 3.5, 101)])
    _write(tmp_path, "2026-01-02", "part-a.parquet", [(3, 11, 1.0, 202)])
    dataset = load_dataset(tmp_path)
    day_1, day_2 = (tmp_path / "ratings" / f"date=2026-01-0{day}" / "part-a.parquet" for day in (1, 2))
    assert dataset.file_rows == ((day_1, 2), (day_2, 1)) and dataset.ratings.height == 3


def test_a_conflicting_repeat_keeps_the_first_rating_in_stream_order(tmp_path, caplog):
    """The sink names a file after its first and last entry ids: their order is the stream's
    (entry 9 before entry 10, though 'part-…-10-…' sorts first as text)."""
    day = "2026-01-01"
    _write(tmp_path, day, "part-1767225600000-10-1767225600000-11.parquet", [(1, 10, 2.0, 100), (5, 1, 3.0, 104)])
    _write(tmp_path, day, "part-1767225600000-9-1767225600000-9.parquet", [(1, 10, 4.0, 100)])
    _write(tmp_path, day, "part-1767225600000-12-1767225600000-12.parquet", [(5, 1, 0.5, 104)])
    with caplog.at_level(logging.WARNING, "railyard.loaders"):
        dataset = load_dataset(tmp_path)
    assert sorted(dataset.ratings.rows()) == [(1, 10, 4.0, 100), (5, 1, 3.0, 104)]
    assert (dataset.duplicates_dropped, dataset.conflicts_dropped) == (2, 2)
    assert "2 rated an event an earlier row rated differently (the first rating wins)" in caplog.text


def test_other_files_come_before_the_sinks_files_and_a_csv_keeps_its_first_row(tmp_path):
    day = "2026-01-01"
    _write(tmp_path, day, "part-1767225600000-0-1767225600000-0.parquet", [(1, 10, 2.0, 100)])
    _write(tmp_path, day, "zz-export.parquet", [(1, 10, 4.0, 100)])  # a batch export, older than the stream
    assert load_dataset(tmp_path).ratings.rows() == [(1, 10, 4.0, 100)]

    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,100\n2,3,1.0,5\n1,10,2.5,100\n")
    dataset = load_dataset(folder)
    assert dataset.ratings.rows() == [(1, 10, 4.0, 100), (2, 3, 1.0, 5)]
    assert (dataset.duplicates_dropped, dataset.conflicts_dropped) == (1, 1)
