"""The feature build on a Dask cluster, out of core (``RAILYARD_FEATURE_ENGINE=dask``): the same
per-key code as ``railyard.features``, run on partitions that each hold whole keys.

The input is read on the workers: each Parquet file of a date-partitioned data set, or a
MovieLens ``ratings.csv`` in blocks of whole rows (``loaders.csv_blocks``: the workers scan the
file's byte ranges for row ends first, so each block knows the data row it starts at), parsed
and checked as the loader parses and validation checks the whole file.

Every aggregate is per user or per movie, and a row's value needs only the earlier rows of its
own user (or movie). So the ratings are split by a hash of ``userId``; each user partition gets
its rows' user aggregates from ``features.with_user_history`` and is split again by a hash of
``movieId``; each movie partition gets the movie aggregates from ``features.with_movie_history``
and is split by time (whole days, the cut-off between two partitions); each time partition,
sorted the way the one-machine build sorts, becomes one shard of ``train/`` or ``holdout/``. No
feature is computed anywhere else, so the two engines cannot drift: the splits are equal row for
row (the one-machine build cuts each into shards of ``feature_folder.SHARD_ROWS`` rows instead).

Partitions are Parquet files (``parquet_io``: page checksums verified) in a scratch folder next
to the output (on a cluster of several machines: storage every worker sees). Every task reads
files and writes files (a temporary name, then a rename), so a task that a lost worker leaves
undone is run again from the same inputs.
The driver holds only per-file summaries (counts per day) and one day of timestamps, to place the
cut-off exactly where ``features.split_cutoff`` places it. The output (a local folder or an S3
prefix) gets its shards and snapshots from the workers, then ``meta.json``, the mark of a complete
folder, from the driver; a build that fails after the first shard removes what it wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from railyard import feature_folder as folder
from railyard import features as F
from railyard import parquet_io
from railyard import validation as V
from railyard.configs import ValidationBounds
from railyard.events import first_wins
from railyard.loaders import (
    CSV_BLOCK_BYTES,
    RATINGS_SCHEMA,
    CsvBlock,
    check_csv_header,
    csv_blocks,
    csv_ranges,
    read_csv_block,
    read_parquet_files,
    scan_csv_range,
)
from railyard.locations import Location
from railyard.validation import ValidationReport, raise_for_failures, row_level

log = logging.getLogger("railyard.partitioned")
ROWS_PER_PARTITION = 2_000_000  # a partition in a worker: about 1 GB with its features
DAY_S = 86_400
UNIQUE_RATINGS = "ExpectCompoundColumnsToBeUnique"
_HASH_SEED = 20_261_201  # fixed: a rerun of a task puts every row where the first run did
# A user partition's rows keep their place in stream order (input file, row), so that the first
# rating of an event wins there as it does in the loaders.
STREAM_ORDER = {"_file": pl.Int64, "_row": pl.Int64}


class PerKey(Protocol):
    """Work that needs every rating of its keys, done on the partitions as the build passes them
    (``users`` on each user partition's distinct ratings, ``movies`` on each movie partition's),
    on the workers; their results come back to the driver, which ``merged`` puts together.
    ``planned`` gives the work the events per UTC day (day number -> events) before any
    partition reaches it, and returns the work to do."""

    def planned(self, days: Counter) -> PerKey: ...

    def users(self, ratings: pl.DataFrame) -> Any: ...

    def movies(self, ratings: pl.DataFrame) -> Any: ...

    def merged(self, users: list, movies: list) -> Any: ...


@dataclass(frozen=True)
class Together:
    """Several per-key works on the same partitions: their merged results, in order."""

    works: tuple[PerKey, ...]

    def planned(self, days: Counter) -> Together:
        return Together(tuple(work.planned(days) for work in self.works))

    def users(self, ratings: pl.DataFrame) -> tuple:
        return tuple(work.users(ratings) for work in self.works)

    def movies(self, ratings: pl.DataFrame) -> tuple:
        return tuple(work.movies(ratings) for work in self.works)

    def merged(self, users: list, movies: list) -> tuple:
        return tuple(
            work.merged([done[i] for done in users], [done[i] for done in movies]) for i, work in enumerate(self.works)
        )


@dataclass(frozen=True)
class Built:
    meta: dict  # the feature folder's meta.json
    per_key: Any  # ``PerKey.merged`` over the partitions' results (None without one)


@dataclass(frozen=True)
class Summary:
    """What the driver learns of a user partition: its events (rows, one per event) per day,
    oldest and newest."""

    days: Counter
    oldest: int | None  # None: the partition holds no user
    newest: int | None


def build_on_cluster(
    client,
    ratings_files: Sequence[Path],
    movies: pl.DataFrame | None,
    holdout_fraction: float,
    out_dir: Location | Path | str,
    fingerprint: str,
    bounds: ValidationBounds,
    report_dir: Path,
    *,
    scratch_dir: Path | None = None,
    per_key: PerKey | None = None,
    rows_per_partition: int = ROWS_PER_PARTITION,
    csv_block_bytes: int = CSV_BLOCK_BYTES,
) -> Built:
    """Build the feature folder ``out_dir`` on the cluster of ``client`` (a ``distributed.Client``)
    from the ratings files (date-partitioned Parquet files, or a ``ratings.csv`` that the
    workers read in blocks of about ``csv_block_bytes``), validating the ratings and the features
    on the way (as the one-machine run does: ``DataValidationError`` naming each failed
    expectation, its partition and example rows, before anything is written to ``out_dir``, and
    before ``per_key`` sees any partition); the folder's ``meta.json`` contents and ``per_key``'s
    merged results are returned.

    ``out_dir``: a local path or an ``s3://`` prefix (``railyard.locations``). The partitions go
    to a scratch folder in ``scratch_dir`` (default: beside a local ``out_dir``), which every
    worker must see."""
    out = Location.of(out_dir)
    if scratch_dir is None and out.is_s3:
        raise ValueError(f"the feature folder {out} is on S3: name a scratch folder every worker sees")
    scratch = Path(scratch_dir or out.local_path.parent) / f".{out.name}.partitions-{uuid.uuid4().hex[:8]}"
    writing = False
    genres = client.scatter(F.movie_genres(movies), broadcast=True)  # once per worker, not per task
    pieces = input_pieces(client, ratings_files, csv_block_bytes)
    rows = sum(
        piece.rows if isinstance(piece, CsvBlock) else pq.ParquetFile(piece).metadata.num_rows for piece in pieces
    )
    workers = max(len(client.scheduler_info()["workers"]), 1)
    count = math.ceil(rows / rows_per_partition / workers) * workers  # every worker as busy as the next
    try:
        raw = row_level(V.ratings_expectations(bounds, now_ts=int(time.time())))
        per_file = [e for e in raw if type(e).__name__ != UNIQUE_RATINGS]
        per_user = [e for e in raw if type(e).__name__ == UNIQUE_RATINGS]  # duplicates share a user
        reports = each(
            client,
            split_by_user,
            pieces,
            range(len(pieces)),
            count=count,
            scratch=scratch,
            checks=per_file,
            reports=report_dir,
        )
        summarized = each(client, summarize, range(count), scratch=scratch, checks=per_user, reports=report_dir)
        summaries = [summary for summary, _ in summarized if summary.oldest is not None]
        reports += [report for _, report in summarized]
        distinct = sum(sum(summary.days.values()) for summary in summaries)
        raise_for_failures(*reports, raw_table_report(distinct, bounds, report_dir))
        cutoff = exact_cutoff(client, summaries, holdout_fraction, count, scratch)
        edges = time_edges([summary.days for summary in summaries], cutoff, count)
        if per_key is not None:
            per_key = per_key.planned(sum((summary.days for summary in summaries), Counter()))
        hook = client.scatter(per_key, broadcast=True) if per_key is not None else None
        keyed = {"scratch": scratch, "genres": genres, "cutoff": cutoff, "hook": hook}
        by_user = each(client, add_user_history, range(count), count=count, **keyed)
        shutil.rmtree(scratch / "by-user")  # every stage's results are in hand: its inputs can go
        by_movie = each(client, add_movie_history, range(count), edges=edges, **keyed)
        shutil.rmtree(scratch / "by-movie")
        writing = True  # from here on a failure removes the folder: no meta.json, yet shards
        folder.clear_folder(out)
        periods = each(
            client,
            check_period,
            range(len(edges) + 1),
            scratch=scratch,
            cutoff=cutoff,
            bounds=bounds,
            reports=report_dir,
            out=out,
        )
        raise_for_failures(
            *(period.report for period in periods if period.report),
            *feature_table_reports(periods, cutoff, bounds, report_dir),
        )
        written = {side: sum(period.rows for period in periods if period.side == side) for side in folder.SPLITS}
        client.submit(write_snapshots, scratch, genres, out, pure=False).result()
        priors = F.priors_of(*(sum(part) for part in zip(*(sums for sums, _ in by_user))))
        merged = None
        if per_key is not None:
            merged = per_key.merged(
                [done for _, done in by_user if done is not None], [d for d in by_movie if d is not None]
            )
        folder.write_meta(out, cutoff, priors, fingerprint, written)  # last: the folder is complete
        return Built(json.loads((out / "meta.json").read_text()), merged)
    except BaseException:
        if writing:
            out.remove()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def input_pieces(client, ratings_files: Sequence[Path], csv_block_bytes: int) -> list[str | CsvBlock]:
    """What the first tasks read: each Parquet file whole; a CSV file in blocks of whole rows,
    found by scanning it on the workers (only its header line is read here)."""
    pieces = []
    for file in ratings_files:
        if Path(file).suffix != ".csv":
            pieces.append(str(file))
            continue
        check_csv_header(file, RATINGS_SCHEMA)
        ranges = csv_ranges(file, csv_block_bytes)
        scans = each(client, scan_csv_range, [file] * len(ranges), *zip(*ranges, strict=True))
        pieces += csv_blocks(file, ranges, scans)
    return pieces


def each(client, task, *iterables, **options) -> list:
    """``task`` over the iterables on the cluster, the results in order; a task's error is raised
    as the task raised it. ``pure=False``: every call is run, never taken from a cache."""
    started = time.perf_counter()
    results = client.gather(client.map(task, *iterables, pure=False, **options))
    log.info("%s: %d tasks in %.1f s", task.__name__, len(results), time.perf_counter() - started)
    return results


# -- the driver's arithmetic ---------------------------------------------------------------------


def exact_cutoff(client, summaries: Sequence[Summary], holdout_fraction: float, count: int, scratch: Path) -> int:
    """``features.split_cutoff`` over every distinct row, from counts per day and one day's
    timestamps (the day holding the cut-off position)."""
    days = sum((summary.days for summary in summaries), Counter())
    total = sum(days.values())
    oldest = min(summary.oldest for summary in summaries)
    F.check_splittable(total, oldest, max(summary.newest for summary in summaries))
    position = F.cutoff_position(total, holdout_fraction)
    before = 0
    for day in sorted(days):
        if before + days[day] > position:
            break
        before += days[day]
    stamps = np.sort(np.concatenate(each(client, timestamps_on, range(count), scratch=scratch, day=day)))
    cutoff = int(stamps[position - before])
    if cutoff == oldest:  # the oldest timestamp covers the training share: next one up
        later = [t for t in each(client, oldest_after, range(count), scratch=scratch, after=cutoff) if t]
        cutoff = min(later)
    return cutoff


def time_edges(days: Iterable[Counter], cutoff: int, count: int) -> list[int]:
    """Timestamps that cut the rows into about ``count`` time partitions of whole days, the
    cut-off among them: a partition is all training or all holdout, ties never split."""
    per_day = sum(days, Counter())
    target = max(sum(per_day.values()) // count, 1)
    edges, filled = {cutoff}, 0
    for day in sorted(per_day):
        filled += per_day[day]
        if filled >= target:
            edges.add((day + 1) * DAY_S)
            filled = 0
    return sorted(edges)


# -- the tasks (module functions: workers import them by name) ----------------------------------


def split_by_user(
    piece: str | CsvBlock, order: int, *, count: int, scratch: Path, checks: list, reports: Path
) -> ValidationReport:
    """One piece of the input (the ``order``-th in stream order), a Parquet file or a block of a
    CSV file's rows: its rows checked (row numbers are the file's data rows), then split by user."""
    if isinstance(piece, CsvBlock):
        ratings = read_csv_block(piece, RATINGS_SCHEMA)
        first = piece.first_row
        name = f"raw_ratings@{piece.file.name}/data-rows-{first}-{first + ratings.height - 1}"
        key = f"{piece.file}@{piece.start}"
    else:
        ratings = read_parquet_files([Path(piece)], RATINGS_SCHEMA)
        first, name, key = 1, f"raw_ratings@{Path(piece).parent.name}/{Path(piece).name}", piece
    report = V.run_suite(name, ratings, checks, reports / "partitions", first_row=first, run_name=reports.name)
    placed = ratings.with_columns(
        pl.lit(order, pl.Int64).alias("_file"), pl.int_range(pl.len(), dtype=pl.Int64).alias("_row")
    )
    write_partitions(placed, _bucket("userId", count), scratch / "by-user", _file_key(key))
    return report


def summarize(part: int, *, scratch: Path, checks: list, reports: Path) -> tuple[Summary, ValidationReport]:
    """One user partition: its events per day, and the checks that need every row of a user."""
    ratings = distinct_ratings(scratch, part)
    report = V.run_suite(
        f"raw_ratings@user-partition-{part:06d}", ratings, checks, reports / "partitions", run_name=reports.name
    )
    stamps = ratings.get_column("timestamp")
    days = Counter(dict((stamps // DAY_S).value_counts().iter_rows()))
    return Summary(days, stamps.min(), stamps.max()), report


def timestamps_on(part: int, *, scratch: Path, day: int) -> np.ndarray:
    stamps = distinct_ratings(scratch, part).get_column("timestamp")
    return stamps.filter(stamps // DAY_S == day).to_numpy()


def oldest_after(part: int, *, scratch: Path, after: int) -> int | None:
    stamps = distinct_ratings(scratch, part).get_column("timestamp")
    return stamps.filter(stamps > after).min()


def add_user_history(
    part: int, *, scratch: Path, genres: pl.DataFrame, cutoff: int, count: int, hook: PerKey | None
) -> tuple[tuple[int, float, float], Any]:
    """One user partition: its rows' user aggregates, its users' training totals; the training
    sums (for the priors) and ``hook.users``' result back to the driver."""
    ratings = distinct_ratings(scratch, part)
    if ratings.is_empty():
        return (0, 0.0, 0.0), None
    done = hook.users(ratings) if hook is not None else None
    rows = F.labelled(ratings)
    train = rows.filter(pl.col("timestamp") < cutoff)
    write_atomically(F.user_totals(train, genres), scratch / "user-totals" / f"{part:06d}.parquet")
    write_partitions(F.with_user_history(rows, genres), _bucket("movieId", count), scratch / "by-movie", f"{part:06d}")
    return F.training_sums(train), done


def add_movie_history(
    part: int, *, scratch: Path, genres: pl.DataFrame, cutoff: int, edges: list[int], hook: PerKey | None
) -> Any:
    """One movie partition: its rows' movie aggregates, its movies' training totals;
    ``hook.movies``' result back to the driver."""
    rows = read_partition(scratch / "by-movie", part).sort("timestamp", "userId", "movieId")
    if rows.is_empty():
        return None
    done = hook.movies(rows.select(RATINGS_SCHEMA.keys())) if hook is not None else None
    train = rows.filter(pl.col("timestamp") < cutoff)
    write_atomically(F.movie_totals(train, genres), scratch / "movie-totals" / f"{part:06d}.parquet")
    built = F.with_movie_history(rows, genres).select(*F.feature_columns())
    period = pl.Series(np.searchsorted(np.asarray(edges), built.get_column("timestamp").to_numpy(), side="right"))
    write_partitions(built, period, scratch / "by-time", f"{part:06d}")
    return done


@dataclass(frozen=True)
class Period:
    """A time partition of the features, checked: what the whole-table checks need of it."""

    side: str  # train | holdout
    rows: int
    positives: float
    oldest: int | None
    newest: int | None
    report: ValidationReport | None  # None: an empty partition


def check_period(
    part: int, *, scratch: Path, cutoff: int, bounds: ValidationBounds, reports: Path, out: Location
) -> Period:
    """One time partition (all training or all holdout rows): sorted as the one-machine build
    sorts, written as its split's shard number ``part`` (shards in number order are the split in
    time order), and its row-level feature checks run."""
    rows = read_partition(scratch / "by-time", part)
    if rows.is_empty():
        return Period("train", 0, 0.0, None, None, None)
    rows = rows.sort("timestamp", "userId", "movieId")
    side = "train" if rows.item(0, "timestamp") < cutoff else "holdout"  # the edges include the cut-off
    folder.write_shard(rows, out, side, part)
    checks = row_level(V.feature_expectations(bounds, side, cutoff))
    report = V.run_suite(
        f"features_{side}@time-partition-{part:06d}",
        rows,
        checks,
        reports / "partitions",
        view=V.scalar_view,
        run_name=reports.name,
    )
    stamps = rows.get_column("timestamp")
    return Period(
        side, rows.height, float(rows.get_column("label").cast(pl.Float64).sum()), stamps.min(), stamps.max(), report
    )


def raw_table_report(rows: int, bounds: ValidationBounds, report_dir: Path) -> ValidationReport:
    return V.table_report(
        "raw_ratings.table",
        rows,
        [
            (
                "expect_table_row_count_to_be_between",
                f"between {bounds.min_rows} and {bounds.max_rows} ratings",
                None,
                rows,
                bounds.min_rows <= rows <= bounds.max_rows,
            )
        ],
        report_dir,
    )


def feature_table_reports(
    periods: Sequence[Period], cutoff: int, bounds: ValidationBounds, report_dir: Path
) -> list[ValidationReport]:
    """The feature suites' whole-table expectations per side, from the time partitions' summaries."""
    reports = []
    for side in ("train", "holdout"):
        parts = [period for period in periods if period.side == side and period.rows]
        rows = sum(period.rows for period in parts)
        rate = sum(period.positives for period in parts) / rows if rows else None
        if side == "train":
            newest = max((period.newest for period in parts), default=None)
            split = (
                "expect_column_max_to_be_between",
                f"training rows before the cut-off {cutoff}",
                "timestamp",
                newest,
                newest is not None and newest <= cutoff - 1,
            )
        else:
            oldest = min((period.oldest for period in parts), default=None)
            split = (
                "expect_column_min_to_be_between",
                f"holdout rows at or after the cut-off {cutoff}",
                "timestamp",
                oldest,
                oldest is not None and oldest >= cutoff,
            )
        checks = [
            (
                "expect_table_row_count_to_be_between",
                f"a non-empty {side} split",
                None,
                rows,
                1 <= rows <= bounds.max_rows,
            ),
            split,
            (
                "expect_column_mean_to_be_between",
                f"label balance between {bounds.min_positive_rate} and {bounds.max_positive_rate}",
                "label",
                rate,
                rate is not None and bounds.min_positive_rate <= rate <= bounds.max_positive_rate,
            ),
        ]
        reports.append(V.table_report(f"features_{side}.table", rows, checks, report_dir))
    return reports


def write_snapshots(scratch: Path, genres: pl.DataFrame, out: Location) -> None:
    users, movies = (
        parquet_io.read_files(sorted((scratch / name).glob("*.parquet"))) for name in ("user-totals", "movie-totals")
    )
    folder.write_snapshots(*F.snapshots(users, movies, genres), out)


# -- partitions on disk ---------------------------------------------------------------------------


def _file_key(file: str) -> str:
    """A name for an input file's part of a partition, unique among the input files."""
    return hashlib.sha256(file.encode()).hexdigest()[:16]


def _bucket(key: str, count: int):
    return lambda frame: (frame.get_column(key).hash(seed=_HASH_SEED) % count).cast(pl.Int64)


def write_partitions(frame: pl.DataFrame, partition_of, root: Path, name: str) -> None:
    """Each partition's rows of ``frame`` as ``root/<partition>/<name>.parquet``."""
    parts = partition_of(frame) if callable(partition_of) else partition_of
    for (part,), rows in frame.with_columns(parts.alias("_part")).partition_by("_part", as_dict=True).items():
        write_atomically(rows.drop("_part"), root / f"{int(part):06d}" / f"{name}.parquet")


def read_partition(root: Path, part: int, schema: dict | None = None) -> pl.DataFrame:
    """Every file of one partition (``schema``'s empty frame when there is none)."""
    folder = root / f"{part:06d}"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    return parquet_io.read_files(files) if files else pl.DataFrame(schema=schema)


def distinct_ratings(scratch: Path, part: int) -> pl.DataFrame:
    """A user partition's ratings, the first row of each event only, in stream order (as the
    loader keeps them: the rows of an event share their user, so they meet in one partition)."""
    rows = read_partition(scratch / "by-user", part, RATINGS_SCHEMA | STREAM_ORDER).sort(*STREAM_ORDER)
    return first_wins(rows.drop(*STREAM_ORDER)).ratings


def write_atomically(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    parquet_io.write(frame, temporary, compression="lz4")  # read once, soon: speed over size
    temporary.rename(path)
