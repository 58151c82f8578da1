"""Read raw ratings (and optional movies) from a MovieLens folder or date-partitioned Parquet.

The loaders check only what they must to read the data: the files exist, the columns are there and
the values parse as the right types. Duplicates, out-of-range ratings and nulls are the validation
step's job, so they pass through intact (a null stays null), with one exception: in Parquet
partitions, a row identical to another in all four columns is dropped (the event stream's sink
writes an event twice when a batch is redelivered cut differently); a rating of the same event
with another value still reaches validation.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from railyard import parquet_io
from railyard.errors import DataLoadError
from railyard.fsutil import sha256_file

RATINGS_SCHEMA = {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
MOVIES_SCHEMA = {"movieId": pl.Int64, "title": pl.String, "genres": pl.String}
PARTITION_PREFIX = "date="
log = logging.getLogger("railyard.loaders")
# The genres MovieLens writes in movies.csv (pipe-separated), and its marker for none.
MOVIELENS_GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
NO_GENRES = "(no genres listed)"
_LISTED_ENTRIES = 10


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare by
class RawDataset:
    ratings: pl.DataFrame  # userId Int64, movieId Int64, rating Float64, timestamp Int64
    movies: pl.DataFrame | None  # movieId Int64, title String, genres String; None without a movies file
    source_files: tuple[Path, ...]  # every input file read, sorted
    duplicates_dropped: int = 0  # Parquet rows identical to another in all four columns

    def fingerprint(self, *extra: str) -> str:
        """sha256 over each source file's name (relative to their common folder) and bytes, then ``extra``.

        Stable across runs and machines (the folder's location does not count); any changed byte,
        renamed file or extra string changes it. Files are hashed as they are on disk now.
        """
        return files_fingerprint(self.source_files, *extra)


def files_fingerprint(files: Sequence[Path], *extra: str) -> str:
    """``RawDataset.fingerprint`` of the data set these (sorted) files make, without loading it."""
    root = Path(os.path.commonpath([path.parent for path in files]))
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"file\0{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    for item in extra:
        digest.update(f"extra\0{len(item)}\0{item}\n".encode())
    return digest.hexdigest()


def load_dataset(path: Path) -> RawDataset:
    """Load a MovieLens folder (``ratings.csv``) or date-partitioned Parquet (``ratings/date=…/``)."""
    path = _existing_dir(Path(path))
    has_csv = (path / "ratings.csv").is_file()
    has_parquet = (path / "ratings").is_dir() or bool(_partition_dirs(path))
    if has_csv and has_parquet:
        raise DataLoadError(f"{path} holds both ratings.csv and Parquet ratings partitions: keep one layout per folder")
    if has_csv:
        return load_movielens_dir(path)
    if has_parquet:
        return load_parquet_partitions(path)
    raise DataLoadError(
        f"no ratings found in {path}: expected ratings.csv (MovieLens layout) or "
        f"ratings/{PARTITION_PREFIX}YYYY-MM-DD/*.parquet; found {_listing(path)}"
        + _rename_hint(["ratings.csv", "ratings"], [entry.name for entry in path.iterdir()])
    )


def load_movielens_dir(path: Path) -> RawDataset:
    """``ratings.csv`` and an optional ``movies.csv`` (ml-latest-small / ml-25m); other files are ignored."""
    path = _existing_dir(Path(path))
    ratings_file = path / "ratings.csv"
    if not ratings_file.is_file():
        raise DataLoadError(
            f"ratings file {ratings_file} not found; {path} holds {_listing(path)}"
            + _rename_hint(["ratings.csv"], [entry.name for entry in path.iterdir()])
        )
    movies_file = path / "movies.csv"
    movies = read_movies(movies_file) if movies_file.is_file() else None
    return RawDataset(
        ratings=_read_csv(ratings_file, RATINGS_SCHEMA),
        movies=movies,
        source_files=tuple(sorted([ratings_file] + ([movies_file] if movies is not None else []))),
    )


def load_parquet_partitions(path: Path) -> RawDataset:
    """``<path>/ratings/date=YYYY-MM-DD/*.parquet`` (or the partitions right under ``path``) and an
    optional ``movies.csv`` or ``movies.parquet`` at ``path``."""
    ratings_files, movies_file = parquet_layout(path)
    ratings = read_parquet_files(ratings_files, RATINGS_SCHEMA)
    distinct = ratings.unique(maintain_order=True)
    dropped = ratings.height - distinct.height
    if dropped:
        log.warning("%s: dropped %d rating rows identical to another in all four columns", path, dropped)
    return RawDataset(
        ratings=distinct,
        movies=read_movies(movies_file) if movies_file else None,
        source_files=tuple(sorted(ratings_files + ([movies_file] if movies_file else []))),
        duplicates_dropped=dropped,
    )


def parquet_layout(path: Path) -> tuple[list[Path], Path | None]:
    """The ratings files of a date-partitioned Parquet data set, in partition order, and its
    movies file (None without one), found without reading any data."""
    path = _existing_dir(Path(path))
    ratings_root = path / "ratings" if (path / "ratings").is_dir() else path
    partitions = _partition_dirs(ratings_root)
    if not partitions:
        raise DataLoadError(
            f"no {PARTITION_PREFIX}YYYY-MM-DD partition folders in {ratings_root}; found {_listing(ratings_root)}"
        )
    ratings_files: list[Path] = []
    for partition in partitions:
        # Spark and friends leave _SUCCESS / .crc files next to the data: only *.parquet counts.
        found = sorted(entry for entry in partition.glob("*.parquet") if not entry.name.startswith((".", "_")))
        if not found:
            raise DataLoadError(f"partition folder {partition} has no .parquet files; found {_listing(partition)}")
        ratings_files += found
    movie_files = [file for file in (path / "movies.csv", path / "movies.parquet") if file.is_file()]
    if len(movie_files) > 1:
        raise DataLoadError(f"{path} holds both movies.csv and movies.parquet: keep one")
    return ratings_files, (movie_files[0] if movie_files else None)


def read_movies(file: Path) -> pl.DataFrame:
    movies = _read_csv(file, MOVIES_SCHEMA) if file.suffix == ".csv" else read_parquet_files([file], MOVIES_SCHEMA)
    return _checked_movies(file, movies)


def _checked_movies(file: Path, movies: pl.DataFrame) -> pl.DataFrame:
    """One title and genre list per movie, from MovieLens' genres: features key on both."""
    rows = movies.with_row_index("row")
    known = set(MOVIELENS_GENRES) | {NO_GENRES}
    for row, movie, genres in rows.select("row", "movieId", "genres").iter_rows():
        unknown = [genre for genre in (genres or NO_GENRES).split("|") if genre not in known]
        if unknown:
            raise DataLoadError(
                f"{file}: data row {row + 1} (movieId {movie}) has genre {unknown[0]!r}, which MovieLens does not "
                f"use; genres are {', '.join(MOVIELENS_GENRES)} or {NO_GENRES!r}, separated by '|'"
            )
    distinct = movies.unique(maintain_order=True)  # an exact repeat of a row says nothing new
    repeated = distinct.filter(pl.col("movieId").is_duplicated())
    if repeated.height:
        movie = repeated.get_column("movieId")[0]
        first, second = rows.filter(pl.col("movieId") == movie).get_column("row").to_list()[:2]
        raise DataLoadError(
            f"{file}: movieId {movie} is listed twice with different titles or genres "
            f"(data rows {first + 1} and {second + 1}); keep one row per movie"
        )
    return distinct


def _read_csv(file: Path, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    _check_not_empty(file)
    try:
        header = pl.read_csv(file, n_rows=0, infer_schema=False).columns
    except pl.exceptions.NoDataError as error:
        raise DataLoadError(f"{file} is empty: no header line") from error
    except OSError as error:
        raise DataLoadError(f"{file} cannot be read: {error.strerror or error}") from error
    _check_columns(str(file), header, schema)
    try:
        frame = pl.read_csv(file, columns=list(schema), schema_overrides=schema)
    except pl.exceptions.ComputeError as error:
        raise DataLoadError(_describe_csv_parse_error(file, schema, error)) from error
    if frame.height == 0:
        raise DataLoadError(f"{file} is empty: a header line but no data rows")
    return frame.select(list(schema))


def _describe_csv_parse_error(file: Path, schema: dict[str, pl.DataType], error: Exception) -> str:
    """Find the first value that does not parse (only on the error path: it reads everything as text)."""
    try:
        text = pl.read_csv(file, columns=list(schema), infer_schema=False)
    except pl.exceptions.PolarsError:
        text = None
    if text is not None:
        for column, dtype in schema.items():
            if (bad := _first_unparsable(text[column], dtype)) is not None:
                row, value = bad
                return (
                    f"{file}: column {column!r} must be {_type_name(dtype, value)}, but data row {row + 1} "
                    f"(line {row + 2}) holds {value!r}"
                )
    where = f" (line {line} opens a quote that never closes)" if (line := _unclosed_quote_line(file)) else ""
    return f"{file} could not be read as CSV{where}: {str(error).splitlines()[0]}"


def _unclosed_quote_line(file: Path) -> int | None:
    """The line where a quoted field starts that never ends (quotes may span lines in CSV)."""
    opened = None
    with open(file, encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if line.count('"') % 2:
                opened = number if opened is None else None
    return opened


def read_parquet_files(files: list[Path], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    schemas = {}
    for file in files:
        _check_not_empty(file)
        try:
            schemas[file] = dict(pl.read_parquet_schema(file))
        except (pl.exceptions.PolarsError, OSError) as error:
            raise DataLoadError(f"{file} is not a readable Parquet file: {str(error).splitlines()[0]}") from error
    first, first_schema = files[0], schemas[files[0]]
    for file, file_schema in schemas.items():
        if file_schema != first_schema:
            raise DataLoadError(
                f"Parquet schema differs between partitions: {first} and {file} disagree on "
                + _schema_difference(first_schema, file_schema)
            )
    where = str(first) if len(files) == 1 else f"{first.parent.parent} (e.g. {first.name} in {first.parent.name})"
    _check_columns(where, list(first_schema), schema)
    for column, dtype in schema.items():
        if not _acceptable(first_schema[column], dtype):
            raise DataLoadError(_describe_parquet_type_error(files, column, first_schema[column], dtype))
    frame = parquet_io.read_files(files, list(schema)).select(list(schema)).cast(schema)
    if frame.height == 0:
        raise DataLoadError(f"{where} is empty: no rows in {len(files)} Parquet file(s)")
    return frame


def _acceptable(actual: pl.DataType, wanted: pl.DataType) -> bool:
    """Types that convert without loss: any integer for an id or timestamp, any number for a rating."""
    if wanted == pl.Int64:
        return actual.is_integer()
    if wanted == pl.Float64:
        return actual.is_numeric()
    return actual == wanted


def _describe_parquet_type_error(files: list[Path], column: str, actual: pl.DataType, wanted: pl.DataType) -> str:
    message = f"column {column!r} has type {actual} in {files[0]}, but must be {_type_name(wanted)}"
    for file in files:  # name a value that does not convert, if there is one
        if (bad := _first_unparsable(parquet_io.read(file, [column])[column], wanted)) is not None:
            row, value = bad
            return f"{message}; e.g. {file} data row {row + 1} holds {value!r}"
    return message


def _first_unparsable(values: pl.Series, dtype: pl.DataType) -> tuple[int, object] | None:
    """Index and value of the first non-null entry that does not convert to ``dtype``."""
    if values.dtype == dtype:
        return None
    bad = (values.is_not_null() & values.cast(dtype, strict=False).is_null()).arg_true()
    return (int(bad[0]), values[int(bad[0])]) if len(bad) else None


def _check_columns(where: str, found: list[str], schema: dict[str, pl.DataType]) -> None:
    missing = [column for column in schema if column not in found]
    if not missing:
        return
    message = f"{where} is missing column(s) {', '.join(missing)}; found columns: {', '.join(found) or 'none'}"
    message += _rename_hint(missing, [column for column in found if column not in schema])
    if len(found) == 1 and any(separator in found[0] for separator in (";", "\t", "::", "|")):
        message += "; the header looks like it uses another separator than ','"
    raise DataLoadError(message)


def _rename_hint(expected: list[str], found: list[str]) -> str:
    """' (did you mean …?)' for found names that look like expected ones (user_id → userId)."""
    pairs = [(name, match) for name in expected if (match := _close_match(name, found))]
    if not pairs:
        return ""
    return " (did you mean " + ", ".join(f"{match!r} for {name!r}" for name, match in pairs) + "?)"


def _close_match(name: str, candidates: list[str]) -> str | None:
    def normalize(text: str) -> str:
        return re.sub(r"[^a-z0-9]", "", text.lower())

    by_normalized = {normalize(candidate): candidate for candidate in candidates}
    close = difflib.get_close_matches(normalize(name), list(by_normalized), n=1, cutoff=0.75)
    return by_normalized[close[0]] if close else None


def _schema_difference(a: dict[str, pl.DataType], b: dict[str, pl.DataType]) -> str:
    return "; ".join(
        f"{column}: {a.get(column, 'missing')} vs {b.get(column, 'missing')}"
        for column in dict.fromkeys([*a, *b])
        if a.get(column) != b.get(column)
    )


def _type_name(dtype: pl.DataType, value: object = None) -> str:
    if dtype == pl.Int64 and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return "an integer from -2^63 to 2^63-1 (64 bits)"  # it is an integer, just too large
    return {pl.Int64: "an integer", pl.Float64: "a number", pl.String: "text"}.get(dtype, str(dtype))


def _existing_dir(path: Path) -> Path:
    if not path.exists():
        raise DataLoadError(f"data folder {path} does not exist")
    if not path.is_dir():
        raise DataLoadError(f"{path} is a file: pass the folder that holds ratings.csv or the ratings partitions")
    return path


def _check_not_empty(file: Path) -> None:
    if file.stat().st_size == 0:
        raise DataLoadError(f"{file} is empty (0 bytes)")


def _partition_dirs(root: Path) -> list[Path]:
    return sorted(entry for entry in root.iterdir() if entry.is_dir() and entry.name.startswith(PARTITION_PREFIX))


def _listing(folder: Path) -> str:
    names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    if not names:
        return "nothing (an empty folder)"
    shown = ", ".join(names[:_LISTED_ENTRIES])
    return shown + (f" and {len(names) - _LISTED_ENTRIES} more" if len(names) > _LISTED_ENTRIES else "")
