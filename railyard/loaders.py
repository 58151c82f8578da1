"""Read raw ratings (and optional movies) from a MovieLens folder or date-partitioned Parquet.

The loaders check only what they must to read the data: the files exist, the columns are there and
the values parse as the right types. Out-of-range ratings and nulls are the validation step's job,
so they pass through intact (a null stays null). Repeated events are not: the loaders apply the
event rules' first-wins rule (``railyard.events.first_wins``, as the event stream does), keeping
the first row of each (userId, movieId, timestamp) in stream order and counting the rest: rows
repeated in every column (the stream's sink writes an event twice when a batch is redelivered cut
differently) and later ratings of the same event with another value. Stream order is the order
of the rows in a CSV file, and in a partition of Parquet files first the files the sink did not
write (by name), then the sink's files by the stream entry ids they are named after.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from railyard import parquet_io
from railyard.errors import DataLoadError
from railyard.events import first_wins
from railyard.feature_spec import MOVIELENS_GENRES, NO_GENRES
from railyard.fsutil import sha256_file

RATINGS_SCHEMA = {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
MOVIES_SCHEMA = {"movieId": pl.Int64, "title": pl.String, "genres": pl.String}
PARTITION_PREFIX = "date="
# The event stream's sink names a file after the first and last stream entry ids (ms-seq) it holds.
SINK_FILE = re.compile(r"part-([0-9]+)-([0-9]+)-([0-9]+)-([0-9]+)\.parquet")
log = logging.getLogger("railyard.loaders")
_LISTED_ENTRIES = 10


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare by
class RawDataset:
    ratings: pl.DataFrame  # userId Int64, movieId Int64, rating Float64, timestamp Int64
    movies: pl.DataFrame | None  # movieId Int64, title String, genres String; None without a movies file
    source_files: tuple[Path, ...]  # every input file read, sorted
    duplicates_dropped: int = 0  # rows of an event an earlier row holds (first wins)
    conflicts_dropped: int = 0  # of which rate it with another value than the first
    # The ratings files in the order of their rows, each with its row count, when every row read
    # is kept (none dropped): which rows each file holds. Empty when rows were dropped.
    file_rows: tuple[tuple[Path, int], ...] = ()

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
    ratings_files, _ = dataset_files(path)
    if ratings_files[0].suffix == ".csv":
        return load_movielens_dir(path)
    return load_parquet_partitions(path)


def dataset_files(path: Path) -> tuple[list[Path], Path | None]:
    """The ratings files of the data set at ``path`` (its ``ratings.csv``, or its Parquet
    partitions' files in partition order) and its movies file (None without one), found without
    reading any data."""
    path = _existing_dir(Path(path))
    has_csv = (path / "ratings.csv").is_file()
    has_parquet = (path / "ratings").is_dir() or bool(_partition_dirs(path))
    if has_csv and has_parquet:
        raise DataLoadError(f"{path} holds both ratings.csv and Parquet ratings partitions: keep one layout per folder")
    if has_csv:
        movies_file = path / "movies.csv"
        return [path / "ratings.csv"], (movies_file if movies_file.is_file() else None)
    if has_parquet:
        return parquet_layout(path)
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
    ratings = _read_csv(ratings_file, RATINGS_SCHEMA)
    return _one_row_per_event(
        path,
        ratings,
        movies,
        [ratings_file] + ([movies_file] if movies is not None else []),
        ((ratings_file, ratings.height),),
    )


def load_parquet_partitions(path: Path) -> RawDataset:
    """``<path>/ratings/date=YYYY-MM-DD/*.parquet`` (or the partitions right under ``path``) and an
    optional ``movies.csv`` or ``movies.parquet`` at ``path``."""
    ratings_files, movies_file = parquet_layout(path)
    ratings = read_parquet_files(ratings_files, RATINGS_SCHEMA)
    return _one_row_per_event(
        path,
        ratings,
        read_movies(movies_file) if movies_file else None,
        ratings_files + ([movies_file] if movies_file else []),
        tuple((file, pq.read_metadata(file).num_rows) for file in ratings_files),
    )


def _one_row_per_event(
    path: Path,
    ratings: pl.DataFrame,
    movies: pl.DataFrame | None,
    files: list[Path],
    file_rows: tuple[tuple[Path, int], ...],
) -> RawDataset:
    """The data set with the first row of each event (``ratings`` in stream order, read from
    ``file_rows``: each ratings file and its row count); what was dropped is counted and logged."""
    kept = first_wins(ratings)
    dropped = kept.repeats + kept.conflicts
    if dropped:
        log.warning(
            "%s: dropped %d rating rows of events an earlier row holds: %d repeated it in all four columns, "
            "%d rated an event an earlier row rated differently (the first rating wins)",
            path,
            dropped,
            kept.repeats,
            kept.conflicts,
        )
    return RawDataset(kept.ratings, movies, tuple(sorted(files)), dropped, kept.conflicts, () if dropped else file_rows)


def _stream_order(file: Path) -> tuple:
    """Where a ratings file of a partition comes in stream order: files the event stream's sink
    did not write first (by name), then the sink's by their entry ids (as numbers, not text)."""
    named = SINK_FILE.fullmatch(file.name)
    return (1, tuple(int(part) for part in named.groups()), file.name) if named else (0, (), file.name)


def sink_file_name(first_entry: str, last_entry: str) -> str:
    """The name the sink gives a file holding stream entries ``first_entry`` to ``last_entry``."""
    return f"part-{first_entry}-{last_entry}.parquet"


def parquet_layout(path: Path) -> tuple[list[Path], Path | None]:
    """The ratings files of a date-partitioned Parquet data set, in partition order and within a
    partition in stream order (``_stream_order``), and its movies file (None without one), found
    without reading any data."""
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
        found = sorted(
            (entry for entry in partition.glob("*.parquet") if not entry.name.startswith((".", "_"))), key=_stream_order
        )
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
    check_csv_header(file, schema)
    frame = _parse_csv(file, file, schema)
    if frame.height == 0:
        raise DataLoadError(f"{file} is empty: a header line but no data rows")
    return frame


def check_csv_header(file: Path, schema: dict[str, pl.DataType]) -> None:
    """The file is not empty and its header names ``schema``'s columns (only the header is read)."""
    _check_not_empty(file)
    try:
        header = pl.read_csv(file, n_rows=0, infer_schema=False).columns
    except pl.exceptions.NoDataError as error:
        raise DataLoadError(f"{file} is empty: no header line") from error
    except OSError as error:
        raise DataLoadError(f"{file} cannot be read: {error.strerror or error}") from error
    check_columns(str(file), header, schema)


def _parse_csv(source: Path | bytes, file: Path, schema: dict[str, pl.DataType], first_row: int = 1) -> pl.DataFrame:
    """``schema``'s columns of ``source``: the CSV file ``file``, or its header line and a block of
    its rows whose first is data row ``first_row``; a value that does not parse is refused naming
    its data row in the file."""
    try:
        return pl.read_csv(_readable(source), columns=list(schema), schema_overrides=schema).select(list(schema))
    except pl.exceptions.ComputeError as error:
        raise DataLoadError(_describe_csv_parse_error(source, file, schema, error, first_row)) from error


def _readable(source: Path | bytes) -> Path | io.BytesIO:
    return io.BytesIO(source) if isinstance(source, bytes) else source


def _describe_csv_parse_error(
    source: Path | bytes, file: Path, schema: dict[str, pl.DataType], error: Exception, first_row: int
) -> str:
    """Find the first value that does not parse (only on the error path: it reads everything as text)."""
    try:
        text = pl.read_csv(_readable(source), columns=list(schema), infer_schema=False)
    except pl.exceptions.PolarsError:
        text = None
    if text is not None:
        for column, dtype in schema.items():
            if (bad := _first_unparsable(text[column], dtype)) is not None:
                row, value = bad
                return (
                    f"{file}: column {column!r} must be {_type_name(dtype, value)}, but data row {first_row + row} "
                    f"(line {first_row + row + 1}) holds {value!r}"
                )
    line = _unclosed_quote_line(source, first_row)
    where = f" (line {line} opens a quote that never closes)" if line else ""
    return f"{file} could not be read as CSV{where}: {str(error).splitlines()[0]}"


def _unclosed_quote_line(source: Path | bytes, first_row: int) -> int | None:
    """The file's line where a quoted field starts that never ends (quotes may span lines in CSV);
    ``source`` holds the header line, then lines from data row ``first_row`` on."""
    opened = None
    raw = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # closed with its wrapper
    with io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as lines:
        for index, line in enumerate(lines):
            if line.count('"') % 2:
                number = 1 if index == 0 else first_row + index
                opened = number if opened is None else None
    return opened


# -- a large CSV file in blocks (the partitioned build reads each block on a worker) ----------------

CSV_BLOCK_BYTES = 64 << 20  # about 2.5M MovieLens rating rows: a block's frame is ~100 MB


@dataclass(frozen=True)
class CsvRangeScan:
    """What a byte range of a CSV file holds, for both cases: the range starts outside (index 0)
    or inside (1) a quoted field. Quotes are escaped by doubling in CSV, so their count's parity
    tells which case the next range is in."""

    quotes: int
    row_ends: tuple[int, int]  # line breaks that end a row (not inside a quoted field)
    first_row_end: tuple[int | None, int | None]  # the first one's offset in the file


@dataclass(frozen=True)
class CsvBlock:
    """Whole rows of a CSV file, bytes ``start`` to ``end``; the header is bytes 0 to
    ``header_end``; ``first_row``: the data row (counted from 1) of its first row."""

    file: Path
    header_end: int
    start: int
    end: int
    first_row: int
    rows: int  # its line breaks (a last row without one is not counted)


def csv_ranges(file: Path, block_bytes: int) -> list[tuple[int, int]]:
    size = Path(file).stat().st_size
    return [(start, min(start + block_bytes, size)) for start in range(0, size, block_bytes)]


def scan_csv_range(file: Path, start: int, end: int) -> CsvRangeScan:
    """The quotes and row ends in bytes ``start`` to ``end`` of ``file`` (a worker's task)."""
    with open(file, "rb") as handle:
        handle.seek(start)
        data = np.frombuffer(handle.read(end - start), np.uint8)
    quotes = np.flatnonzero(data == ord('"'))
    breaks = np.flatnonzero(data == ord("\n"))
    inside = np.searchsorted(quotes, breaks) % 2  # odd quotes before it in the range: the other case
    ends = [breaks[inside == case] for case in (0, 1)]
    return CsvRangeScan(
        len(quotes),
        (len(ends[0]), len(ends[1])),
        tuple(start + int(found[0]) if len(found) else None for found in ends),
    )


def csv_blocks(file: Path, ranges: Sequence[tuple[int, int]], scans: Sequence[CsvRangeScan]) -> list[CsvBlock]:
    """The file's rows as blocks of whole rows, one starting in each range that holds a row end,
    from its ranges' scans (in order); refused when it holds no data row."""
    inside, ends_before, starts = 0, 0, []  # (offset, row ends before it)
    for scan in scans:
        if (first := scan.first_row_end[inside]) is not None:
            starts.append((first + 1, ends_before + 1))
        ends_before += scan.row_ends[inside]
        inside = (inside + scan.quotes) % 2
    size = ranges[-1][1] if ranges else 0
    if not starts or starts[0][0] >= size:
        raise DataLoadError(f"{file} is empty: a header line but no data rows")
    header_end = starts[0][0]
    bounds = [*starts, (size, ends_before)]
    return [
        CsvBlock(Path(file), header_end, start, end, first_row=ends, rows=next_ends - ends)
        for (start, ends), (end, next_ends) in zip(bounds, bounds[1:])
        if end > start
    ]


def read_csv_block(block: CsvBlock, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A block's rows, parsed as the whole file is (the same dialect, types and error messages)."""
    with open(block.file, "rb") as handle:
        header = handle.read(block.header_end)
        handle.seek(block.start)
        rows = handle.read(block.end - block.start)
    return _parse_csv(header + rows, block.file, schema, block.first_row)


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
    check_columns(where, list(first_schema), schema)
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


def check_columns(where: str, found: list[str], schema: dict[str, pl.DataType]) -> None:
    """``DataLoadError`` naming the columns of ``schema`` missing from ``found``, with a hint at
    names that look alike and at a header split by another separator than ','."""
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
