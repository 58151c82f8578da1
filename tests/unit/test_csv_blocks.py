"""A large ratings.csv read in blocks of whole rows (the Dask engine's input): the blocks put
together are the file as the loader reads it, in the same dialect, with the file's row numbers."""

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from railyard.loaders import (
    RATINGS_SCHEMA,
    DataLoadError,
    csv_blocks,
    csv_ranges,
    load_dataset,
    read_csv_block,
    scan_csv_range,
)

# Quoted fields, a quoted line break and doubled quotes in a column the loader ignores, a quoted
# number, CRLF line ends and no line break after the last row.
AWKWARD = (
    'userId,movieId,rating,timestamp,comment\r\n1,10,4.0,100,plain\r\n2,11,3.5,101,"with, comma"\r\n'
    '"3",12,"5.0",102,"two\nlines and ""quotes"""\r\n4,13,1.0,103,\r\n5,14,2.5,104,"x\n\n""y"""\r\n6,15,0.5,105,last'
)


def blocks_of(file, block_bytes):
    ranges = csv_ranges(file, block_bytes)
    return csv_blocks(file, ranges, [scan_csv_range(file, start, end) for start, end in ranges])


@pytest.mark.parametrize("block_bytes", [1, 5, 17, 40, 10_000])
def test_blocks_put_together_are_the_file_as_the_loader_reads_it(tmp_path, block_bytes):
    (tmp_path / "ratings.csv").write_text(AWKWARD, newline="")
    file = tmp_path / "ratings.csv"
    whole = load_dataset(tmp_path).ratings
    blocks = blocks_of(file, block_bytes)
    parts = [read_csv_block(block, RATINGS_SCHEMA) for block in blocks]
    assert_frame_equal(pl.concat(parts), whole)
    assert whole.height == 6
    assert [block.first_row for block in blocks] == [1 + sum(p.height for p in parts[:i]) for i in range(len(parts))]
    if block_bytes < 20:
        assert len(blocks) == 6  # a block per row: a quoted line break never cuts one


def test_a_bad_value_in_a_block_is_named_as_the_loader_names_it(tmp_path):
    rows = [f"{1 + i},{1 + i},4.0,{1_700_000_000 + i}" for i in range(300)]
    rows[232] = "233,233,good,1700000232"  # data row 233, line 234
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataLoadError) as whole:
        load_dataset(tmp_path)
    assert "data row 233 (line 234) holds 'good'" in str(whole.value)
    blocks = blocks_of(tmp_path / "ratings.csv", 512)
    (holding,) = [b for b in blocks if b.first_row <= 233 < b.first_row + b.rows]
    assert holding.first_row > 1
    with pytest.raises(DataLoadError) as in_block:
        read_csv_block(holding, RATINGS_SCHEMA)
    assert str(in_block.value) == str(whole.value)


def test_a_quote_that_never_closes_is_named_by_its_line_in_the_file(tmp_path):
    rows = [f"{1 + i},{1 + i},4.0,{1_700_000_000 + i}" for i in range(100)]
    rows[60] = '61,"61,4.0,1700000060'  # line 62
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataLoadError, match="line 62 opens a quote that never closes"):
        load_dataset(tmp_path)
    last = blocks_of(tmp_path / "ratings.csv", 256)[-1]  # the open quote swallows the rest of the file
    assert 1 < last.first_row <= 61
    with pytest.raises(DataLoadError, match="line 62 opens a quote that never closes"):
        read_csv_block(last, RATINGS_SCHEMA)


def test_a_header_without_data_rows_is_empty(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    with pytest.raises(DataLoadError, match="is empty: a header line but no data rows"):
        blocks_of(tmp_path / "ratings.csv", 8)
