"""What Parquet page checksums cost: Railyard's writer and reader (``railyard.parquet_io``:
pyarrow, a CRC-32 per page written and verified) beside Polars' own (no checksums, what Railyard
used before) and beside pyarrow without checksums (the checksums' own share), in one run.

    uv run python -m bench.bench_parquet [--size 5m] [--rounds 3]

Cases, on the bench's generated data set (``bench.run``'s sizes, date-partitioned, cached under
RAILYARD_BENCH_CACHE/bench-data/<size>-parquet) and the features built from it:

- ``ratings``: all ratings as one file (zstd, as generate-data and the event sink write);
- ``features``: the training split of the feature build as one file (lz4, 64k-row groups);
- ``feature folder``: the whole feature folder as the one-machine build writes it
  (``feature_folder.write_feature_set``: shards of ``SHARD_ROWS`` written in parallel; before: one
  shard per split, written by Polars);
- ``partitions``: reading the data set's date partitions (``loaders.read_parquet_files``; before:
  one ``pl.scan_parquet`` over the files);
- ``small files``: the same ratings as 1,000-row files (the event sink writes one per batch).

Each side runs ``--rounds`` times, the sides alternating (A B C, C B A, ...); each keeps its best.
Results: a table and bench/results/parquet-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from bench.bench_engines import dataset
from bench.run import SIZES
from railyard import parquet_io
from railyard.settings import Settings

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SMALL_FILE_ROWS = 1_000
SMALL_FILES = 1_000


def best_of(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Each side's fastest run; the order of the sides alternates from round to round."""
    best = dict.fromkeys(sides, float("inf"))
    names = list(sides)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            started = time.perf_counter()
            sides[name]()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def write_sides(frame: pl.DataFrame, path: Path, **options) -> dict[str, Callable[[], object]]:
    return {
        "polars": lambda: frame.write_parquet(path, **options),
        "pyarrow": lambda: pq.write_table(frame.to_arrow(), path, **options),
        "railyard": lambda: parquet_io.write(frame, path, **options),
    }


def read_sides(files: list[Path]) -> dict[str, Callable[[], object]]:
    """Reads of files Railyard wrote (with checksums): Polars ignores them, pyarrow is told not
    to check them, Railyard checks them."""

    def pyarrow_unverified():
        return pl.concat([pl.from_arrow(pq.ParquetFile(file).read()) for file in files])

    return {
        "polars": lambda: pl.scan_parquet(files, hive_partitioning=False).collect(),
        "pyarrow": pyarrow_unverified,
        "railyard": lambda: parquet_io.read_files(files),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="5m")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from railyard import feature_folder, features
    from railyard.loaders import RATINGS_SCHEMA, load_dataset, parquet_layout, read_parquet_files

    data = dataset(args.size, Settings(home=os.environ.get("RAILYARD_BENCH_CACHE", ".railyard")).home)
    loaded = load_dataset(data)
    ratings = loaded.ratings
    built = features.build_feature_set(loaded, 0.2)
    train = built.train
    partitions = parquet_layout(data)[0]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-parquet-") as scratch:
        scratch = Path(scratch)
        for case, frame, options in (
            ("ratings", ratings, {"compression": "zstd"}),
            (
                "features",
                train,
                {"compression": feature_folder.PARQUET_COMPRESSION, "row_group_size": feature_folder.PARQUET_ROW_GROUP},
            ),
        ):
            path = scratch / f"{case}.parquet"
            write = best_of(write_sides(frame, path, **options), args.rounds)
            parquet_io.write(frame, path, **options)
            read = best_of(read_sides([path]), args.rounds)
            results[case] = {"rows": frame.height, "mib": path.stat().st_size / 2**20, "write": write, "read": read}

        def polars_folder():
            folder = feature_folder.clear_folder(scratch / "folder")
            options = {
                "compression": feature_folder.PARQUET_COMPRESSION,
                "row_group_size": feature_folder.PARQUET_ROW_GROUP,
            }
            for split, frame in zip(feature_folder.SPLITS, (built.train, built.holdout)):
                (folder.local_path / split).mkdir(parents=True)
                frame.write_parquet(folder.local_path / split / "part-000000.parquet", **options)
            for name, frame in zip(feature_folder.SNAPSHOT_FILES, (built.user_snapshot, built.movie_snapshot)):
                frame.write_parquet(folder.local_path / name, **options)

        write = best_of(
            {"polars": polars_folder, "railyard": lambda: feature_folder.write_feature_set(built, scratch / "folder")},
            args.rounds,
        )
        results["feature folder"] = {"rows": built.train.height + built.holdout.height, "write": write}

        read = best_of(
            read_sides(partitions) | {"railyard": lambda: read_parquet_files(partitions, RATINGS_SCHEMA)}, args.rounds
        )
        results["partitions"] = {"rows": ratings.height, "files": len(partitions), "read": read}

        small = ratings.head(SMALL_FILE_ROWS * SMALL_FILES)
        small_files = [scratch / "small" / f"part-{i:05d}.parquet" for i in range(SMALL_FILES)]
        small_files[0].parent.mkdir()
        for i, file in enumerate(small_files):
            parquet_io.write(small.slice(i * SMALL_FILE_ROWS, SMALL_FILE_ROWS), file)
        read = best_of(
            read_sides(small_files) | {"railyard": lambda: read_parquet_files(small_files, RATINGS_SCHEMA)},
            args.rounds,
        )
        results["small files"] = {"rows": small.height, "files": SMALL_FILES, "read": read}

    print(f"Parquet with page checksums, {args.size} ratings, best of {args.rounds} (seconds; ratios to Polars' own)")
    print(f"{'case':<24}{'polars':>9}{'pyarrow':>9}{'railyard':>10}{'railyard/polars':>17}{'railyard/pyarrow':>18}")
    for case, result in results.items():
        for operation in ("write", "read"):
            if operation not in result:
                continue
            seconds = result[operation]
            ratios = {"railyard_vs_polars": seconds["railyard"] / seconds["polars"]}
            if "pyarrow" in seconds:
                ratios["checksums_vs_none"] = seconds["railyard"] / seconds["pyarrow"]
            result[f"{operation}_ratios"] = ratios
            pyarrow = f"{seconds['pyarrow']:>9.3f}" if "pyarrow" in seconds else f"{'-':>9}"
            checksums = f"{ratios['checksums_vs_none']:>17.2f}x" if "pyarrow" in seconds else f"{'-':>18}"
            print(
                f"{case + ' ' + operation:<24}{seconds['polars']:>9.3f}{pyarrow}"
                f"{seconds['railyard']:>10.3f}{ratios['railyard_vs_polars']:>16.2f}x{checksums}"
            )
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"parquet-{args.size}.json"
    out.write_text(
        json.dumps(
            {"size": args.size, "rounds": args.rounds, "machine": platform.machine(), "results": results}, indent=2
        )
    )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
