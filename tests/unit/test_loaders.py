"""Loading MovieLens folders and date-partitioned Parquet: types, layouts, errors, fingerprint."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from railyard.loaders import (
    DataLoadError,
    load_dataset,
    load_movielens_dir,
    load_parquet_partitions,
)
from railyard.synthetic import generate_movielens

HEADER = "userId,movieId,rating,timestamp\n"
RATINGS_TYPES = {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
GENERATED = dict(users=40, movies=60, days=3, ratings_per_day=150, seed=4)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The same synthetic data set in both layouts."""
    root = tmp_path_factory.mktemp("loaders")
    generate_movielens(root / "csv", **GENERATED)
    generate_movielens(root / "parquet", fmt="parquet", **GENERATED)
    return root


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _write_partition(root: Path, day: str, frame: pl.DataFrame) -> None:
    partition = root / "ratings" / f"date={day}"
    partition.mkdir(parents=True)
    frame.write_parquet(partition / "part-0.parquet")


def _ratings(**columns) -> pl.DataFrame:
    base = {"userId": [1, 2], "movieId": [10, 20], "rating": [4.0, 2.5], "timestamp": [1_700_000_000, 1_700_000_100]}
    return pl.DataFrame(base | columns)


def test_movielens_folder_loads_with_exact_types(generated):
    dataset = load_dataset(generated / "csv")
    assert dataset.ratings.schema == pl.Schema(RATINGS_TYPES)
    assert dataset.ratings.height == 450
    assert dataset.movies.schema == pl.Schema({"movieId": pl.Int64, "title": pl.String, "genres": pl.String})
    assert dataset.movies.height == 60
    assert dataset.source_files == (generated / "csv" / "movies.csv", generated / "csv" / "ratings.csv")


def test_extra_movielens_files_are_ignored_and_movies_are_optional(tmp_path):
    folder = _write(
        tmp_path,
        {"ratings.csv": HEADER + "1,10,4.0,1700000000\n", "links.csv": "movieId,imdbId\n", "tags.csv": "x\n"},
    )
    dataset = load_movielens_dir(folder)
    assert dataset.movies is None
    assert dataset.source_files == (folder / "ratings.csv",)
    assert dataset.ratings.row(0) == (1, 10, 4.0, 1_700_000_000)


def test_parquet_partitions_load_the_same_data_as_the_csv(generated):
    from_csv = load_dataset(generated / "csv")
    from_parquet = load_dataset(generated / "parquet")
    assert_frame_equal(from_parquet.ratings, from_csv.ratings)
    assert_frame_equal(from_parquet.movies, from_csv.movies)
    partitions = sorted((generated / "parquet" / "ratings").glob("date=*/part-0.parquet"))
    assert len(partitions) == 3
    assert from_parquet.source_files == tuple(sorted([generated / "parquet" / "movies.csv", *partitions]))


def test_parquet_partitions_directly_under_the_folder_and_movies_parquet(generated, tmp_path):
    shutil.copytree(generated / "parquet" / "ratings", tmp_path / "flat")
    pl.read_csv(generated / "parquet" / "movies.csv").write_parquet(tmp_path / "flat" / "movies.parquet")
    dataset = load_parquet_partitions(tmp_path / "flat")
    expected = load_dataset(generated / "csv")
    assert_frame_equal(dataset.ratings, expected.ratings)
    assert_frame_equal(dataset.movies, expected.movies)
    assert tmp_path / "flat" / "movies.parquet" in dataset.source_files


def test_narrower_parquet_types_are_widened(tmp_path):
    narrow = _ratings().cast({"userId": pl.Int32, "movieId": pl.UInt16, "rating": pl.Float32})
    _write_partition(tmp_path, "2026-01-01", narrow)
    assert load_parquet_partitions(tmp_path).ratings.schema == pl.Schema(RATINGS_TYPES)


def test_nulls_and_out_of_range_ratings_reach_validation_intact_and_an_event_counts_once(tmp_path):
    rows = "1,10,4.0,1700000000\n1,10,4.0,1700000000\n,11,9.5,1700000001\n2,,-1,\n"
    dataset = load_movielens_dir(_write(tmp_path, {"ratings.csv": HEADER + rows}))
    assert dataset.ratings.rows() == [
        (1, 10, 4.0, 1_700_000_000),
        (None, 11, 9.5, 1_700_000_001),
        (2, None, -1.0, None),
    ]
    assert (dataset.duplicates_dropped, dataset.conflicts_dropped) == (1, 0)
    assert dataset.ratings.schema == pl.Schema(RATINGS_TYPES)


def test_missing_path(tmp_path):
    with pytest.raises(DataLoadError, match=r"data folder .*nowhere does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_a_file_instead_of_a_folder(tmp_path):
    file = _write(tmp_path, {"ratings.csv": HEADER}) / "ratings.csv"
    with pytest.raises(DataLoadError, match="is a file: pass the folder that holds ratings.csv"):
        load_dataset(file)


def test_missing_ratings_file_names_what_was_expected_and_found(tmp_path):
    _write(tmp_path, {"Ratings.CSV": HEADER, "movies.csv": "movieId,title,genres\n"})
    with pytest.raises(DataLoadError) as error:
        load_dataset(tmp_path)
    message = str(error.value)
    assert "no ratings found" in message and "expected ratings.csv" in message
    assert "found Ratings.CSV, movies.csv" in message
    assert "did you mean 'Ratings.CSV' for 'ratings.csv'" in message
    with pytest.raises(DataLoadError, match=r"ratings file .*ratings.csv not found; .* holds Ratings.CSV, movies"):
        load_movielens_dir(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(DataLoadError, match=r"found nothing \(an empty folder\)"):
        load_dataset(tmp_path)


def test_misnamed_columns_suggest_the_right_name(tmp_path):
    _write(tmp_path, {"ratings.csv": "user_id,movieId,Rating,timestamp\n1,10,4.0,1700000000\n"})
    with pytest.raises(DataLoadError) as error:
        load_dataset(tmp_path)
    message = str(error.value)
    assert "ratings.csv is missing column(s) userId, rating" in message
    assert "found columns: user_id, movieId, Rating, timestamp" in message
    assert "did you mean 'user_id' for 'userId', 'Rating' for 'rating'?" in message


def test_missing_movie_columns(tmp_path):
    _write(tmp_path, {"ratings.csv": HEADER + "1,10,4.0,1700000000\n", "movies.csv": "movieId,name\n1,x\n"})
    expected = r"movies.csv is missing column\(s\) title, genres; found columns: movieId, name"
    with pytest.raises(DataLoadError, match=expected):
        load_dataset(tmp_path)


def test_another_separator_is_pointed_out(tmp_path):
    _write(tmp_path, {"ratings.csv": "userId;movieId;rating;timestamp\n1;10;4.0;1700000000\n"})
    with pytest.raises(DataLoadError, match="uses another separator than ','"):
        load_dataset(tmp_path)


def test_non_numeric_rating_names_column_value_and_line(tmp_path):
    rows = "1,10,4.0,1700000000\n2,11,3.5,1700000001\n3,12,good,1700000002\n"
    _write(tmp_path, {"ratings.csv": HEADER + rows})
    with pytest.raises(DataLoadError) as error:
        load_dataset(tmp_path)
    message = str(error.value)
    assert "ratings.csv: column 'rating' must be a number" in message
    assert "data row 3 (line 4) holds 'good'" in message


def test_fractional_id_is_a_type_error(tmp_path):
    _write(tmp_path, {"ratings.csv": HEADER + "1,10,4.0,1700000000\n2,10.5,4.0,1700000001\n"})
    expected = r"column 'movieId' must be an integer, but data row 2 \(line 3\) holds '10.5'"
    with pytest.raises(DataLoadError, match=expected):
        load_dataset(tmp_path)


def test_zero_byte_ratings_file(tmp_path):
    _write(tmp_path, {"ratings.csv": ""})
    with pytest.raises(DataLoadError, match=r"ratings.csv is empty \(0 bytes\)"):
        load_dataset(tmp_path)


def test_header_only_ratings_file(tmp_path):
    _write(tmp_path, {"ratings.csv": HEADER})
    with pytest.raises(DataLoadError, match="ratings.csv is empty: a header line but no data rows"):
        load_dataset(tmp_path)


def test_both_layouts_in_one_folder_are_ambiguous(tmp_path):
    _write(tmp_path, {"ratings.csv": HEADER + "1,10,4.0,1700000000\n"})
    _write_partition(tmp_path, "2026-01-01", _ratings())
    with pytest.raises(DataLoadError, match="holds both ratings.csv and Parquet ratings partitions"):
        load_dataset(tmp_path)


def test_ratings_folder_without_partitions(tmp_path):
    _write(tmp_path / "ratings", {"notes.txt": "x"})
    with pytest.raises(DataLoadError, match=r"no date=YYYY-MM-DD partition folders in .*ratings; found notes.txt"):
        load_dataset(tmp_path)


def test_partition_folder_without_parquet_files(tmp_path):
    _write_partition(tmp_path, "2026-01-01", _ratings())
    _write(tmp_path / "ratings" / "date=2026-01-02", {"_SUCCESS": ""})
    expected = r"partition folder .*date=2026-01-02 has no .parquet files; found _SUCCESS"
    with pytest.raises(DataLoadError, match=expected):
        load_dataset(tmp_path)


def test_parquet_schema_that_disagrees_between_partitions(tmp_path):
    _write_partition(tmp_path, "2026-01-01", _ratings())
    _write_partition(tmp_path, "2026-01-02", _ratings().cast({"rating": pl.Float32}))
    with pytest.raises(DataLoadError) as error:
        load_dataset(tmp_path)
    message = str(error.value)
    assert "Parquet schema differs between partitions" in message
    assert "date=2026-01-01/part-0.parquet and" in message and "date=2026-01-02/part-0.parquet" in message
    assert "rating: Float64 vs Float32" in message


def test_parquet_misnamed_column(tmp_path):
    _write_partition(tmp_path, "2026-01-01", _ratings().rename({"movieId": "movie_id"}))
    with pytest.raises(DataLoadError, match=r"missing column\(s\) movieId; .*did you mean 'movie_id' for 'movieId'"):
        load_dataset(tmp_path)


def test_parquet_non_numeric_rating_names_file_row_and_value(tmp_path):
    _write_partition(tmp_path, "2026-01-01", _ratings(rating=["4.0", "3.5"]))
    _write_partition(tmp_path, "2026-01-02", _ratings(rating=["4.0", "great"]))
    with pytest.raises(DataLoadError) as error:
        load_dataset(tmp_path)
    message = str(error.value)
    assert "column 'rating' has type String" in message and "must be a number" in message
    assert "date=2026-01-02/part-0.parquet data row 2 holds 'great'" in message


def test_parquet_partitions_without_rows(tmp_path):
    _write_partition(tmp_path, "2026-01-01", _ratings().clear())
    with pytest.raises(DataLoadError, match=r"is empty: no rows in 1 Parquet file\(s\)"):
        load_dataset(tmp_path)


def test_zero_byte_parquet_file(tmp_path):
    _write(tmp_path / "ratings" / "date=2026-01-01", {"part-0.parquet": ""})
    with pytest.raises(DataLoadError, match=r"part-0.parquet is empty \(0 bytes\)"):
        load_dataset(tmp_path)


def test_fingerprint_is_stable_and_independent_of_location(generated, tmp_path):
    shutil.copytree(generated / "csv", tmp_path / "copy")
    first = load_dataset(generated / "csv").fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0
    assert load_dataset(generated / "csv").fingerprint() == first
    assert load_dataset(tmp_path / "copy").fingerprint() == first


def test_fingerprint_changes_with_any_byte_file_name_or_extra(generated, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(generated / "csv", folder)
    dataset = load_dataset(folder)
    base = dataset.fingerprint()
    assert dataset.fingerprint("holdout=0.2") != base
    assert dataset.fingerprint("a", "b") != dataset.fingerprint("ab")

    text = (folder / "movies.csv").read_text()
    (folder / "movies.csv").write_text(text.replace("Movie 1 (", "Movie 1 ((", 1))
    assert dataset.fingerprint() != base  # the movies file counts too
    (folder / "movies.csv").write_text(text)
    assert dataset.fingerprint() == base

    partitions = load_dataset(generated / "parquet")
    assert partitions.fingerprint() != base  # different files, same rows


# -- inputs that used to escape as tracebacks or vague messages -----------------------------------


def test_a_corrupt_parquet_page_names_the_damaged_file(tmp_path):
    rows = 50_000
    frame = pl.DataFrame(
        {
            "userId": range(rows),
            "movieId": [i * 7919 % 100_003 for i in range(rows)],
            "rating": [0.5 + (i % 10) / 2 for i in range(rows)],
            "timestamp": [1_700_000_000 + i * 37 for i in range(rows)],
        }
    )
    partition = tmp_path / "ratings" / "date=2024-01-02"
    partition.mkdir(parents=True)
    damaged = partition / "part-0.parquet"
    frame.write_parquet(damaged, compression="zstd", statistics=False)
    data = bytearray(damaged.read_bytes())
    for offset in range(len(data) // 4, len(data) // 2, 97):  # the data pages; the footer stays readable
        data[offset] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataLoadError, match=f"{damaged} is damaged and cannot be read"):
        load_dataset(tmp_path)


def test_a_ratings_file_the_user_may_not_read_is_named(tmp_path):
    ratings = _write(tmp_path, {"ratings.csv": HEADER + "1,2,3.0,100\n"}) / "ratings.csv"
    ratings.chmod(0o000)
    # Root reads any file: as root, the loader runs without the capabilities that allow it.
    without_override = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else []
    probe = (
        "import sys; from railyard.loaders import DataLoadError, load_dataset\n"
        "try: load_dataset(sys.argv[1])\n"
        "except DataLoadError as error: print(error)"
    )
    result = subprocess.run(
        [*without_override, sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith(f"{ratings} cannot be read: Permission denied"), result.stdout + result.stderr


@pytest.mark.parametrize(
    ("movies", "message"),
    [
        (
            "movieId,title,genres\n1,A,Comedy\n2,B,Drama\n1,A (again),Horror\n",
            "movieId 1 is listed twice with different titles or genres (data rows 1 and 3)",
        ),
        ("movieId,title,genres\n1,A,Comedy|Cooking\n", "data row 1 (movieId 1) has genre 'Cooking'"),
    ],
    ids=["conflicting duplicate", "unknown genre"],
)
def test_movies_must_describe_each_movie_once_with_movielens_genres(tmp_path, movies, message):
    folder = _write(tmp_path, {"ratings.csv": HEADER + "1,1,4.0,100\n", "movies.csv": movies})
    with pytest.raises(DataLoadError, match=re.escape(f"{folder / 'movies.csv'}: {message}")):
        load_dataset(folder)


def test_an_exact_repeat_of_a_movie_row_is_harmless(tmp_path):
    movies = "movieId,title,genres\n1,A,Comedy\n1,A,Comedy\n2,B,(no genres listed)\n"
    folder = _write(tmp_path, {"ratings.csv": HEADER + "1,1,4.0,100\n", "movies.csv": movies})
    assert load_dataset(folder).movies.get_column("movieId").to_list() == [1, 2]


def test_an_integer_beyond_64_bits_is_called_that(tmp_path):
    folder = _write(tmp_path, {"ratings.csv": HEADER + f"{2**64},1,4.0,100\n"})
    with pytest.raises(DataLoadError, match=r"'userId' must be an integer from -2\^63 to 2\^63-1 .*\(line 2\)"):
        load_dataset(folder)


def test_an_unclosed_quote_names_its_line(tmp_path):
    folder = _write(tmp_path, {"ratings.csv": HEADER + '1,2,3.0,100\n2,"3,4.0,200\n3,4,4.0,300\n'})
    with pytest.raises(DataLoadError, match="line 3 opens a quote that never closes"):
        load_dataset(folder)
