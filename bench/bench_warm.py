"""Warm starts beside full retrains over consecutive daily windows of one data set, in one run.

    uv run python -m bench.bench_warm [--size 1m | --data DIR] [--days 5] [--window-days 1] [--kind fresh_wd]

Day 0 is the data up to the end of the (days + 1)-th last window (``--window-days`` UTC days
each), trained from scratch: the production version. Then for each next window k = 1..days, the
data up to its end, its features built once (the holdout: the newest RAILYARD_HOLDOUT_FRACTION),
and two versions trained on it, taking turns at going first:

- **full**: from scratch on every training row (what every run did before warm starts);
- **warm**: from the production version, on the rows since its training cut-off and a replay of
  the older ones sized as a run sizes it (``railyard.warm_start.Replay``); the warm version becomes production, as a
  daily ``auto`` schedule keeps it between full retrains.

Each is exported (the served SavedModel and its warm-start state, as a run exports it) and scored
on that window's holdout (the same rows for both): AUC, log loss, training + export seconds, rows
fit. Results: a table on stdout and bench/results/warm-<name>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from bench.run import RESULTS_DIR, SIZES, dataset

DAY_S = 86_400


def window_ends(ratings: pl.DataFrame, days: int, window_days: int) -> list[int]:
    """The exclusive end (epoch s) of the production data (first) and of each next window."""
    last_day = int(ratings.get_column("timestamp").max()) // DAY_S
    return [(last_day + 1 - window_days * (days - k)) * DAY_S for k in range(days + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--size", choices=sorted(SIZES), default="1m", help="a generated data set (cached)")
    source.add_argument("--data", type=Path, help="a MovieLens-format folder (ratings.csv, movies.csv)")
    parser.add_argument("--days", type=int, default=5, help="consecutive windows after the production version")
    parser.add_argument("--window-days", type=int, default=1, help="UTC days per window")
    parser.add_argument("--kind", default="fresh_wd")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="railyard-bench-warm-"))
    os.environ.update(RAILYARD_HOME=str(scratch / "home"), RAILYARD_EPOCHS=str(args.epochs))
    from infra.tfserving.export import export_for_serving
    from railyard import evaluation, features, model_input, training, warm_start
    from railyard.kinds.registry import load_kind
    from railyard.loaders import load_dataset
    from railyard.settings import Settings

    settings = Settings()
    cache_home = Settings(home=os.environ.get("RAILYARD_BENCH_CACHE", ".railyard")).home
    data_dir = args.data or dataset(args.size, cache_home)
    name = args.data.name if args.data else args.size
    everything = load_dataset(data_dir)
    kind, config = load_kind(args.kind), settings.train_config()

    def day_features(day: int, data_end: int):
        """The features of the data before ``data_end``, built and written once per day, for both sides."""
        ratings = everything.ratings.filter(pl.col("timestamp") < data_end)
        feature_set = features.build_feature_set(
            dataclasses.replace(everything, ratings=ratings), settings.holdout_fraction
        )
        features.write_feature_set(feature_set, scratch / f"features-{day}")
        return ratings.height, feature_set.without_training_rows(), feature_set.train.get_column("timestamp").to_numpy()

    def version(day: int, built, warm_from=None) -> dict:
        """A version trained on the day's features (``built``; warm from ``warm_from``: (previous,
        its cut-off)), exported and scored on the holdout."""
        ratings, feature_set, train_timestamps = built
        folder = scratch / f"features-{day}"
        warm, replay_share = None, 0.0
        if warm_from is not None:
            previous, since = warm_from
            replay_share = warm_start.Replay.of(settings).share(train_timestamps, since)
            warm = training.WarmStart(previous, model_input.Warm(since, replay_share, config.seed))
        started = time.perf_counter()
        result = training.train_model(folder, config, kind, warm=warm)
        out = export_for_serving(result, feature_set, scratch / f"v{day}-{'warm' if warm else 'full'}", "recmodel", 1)
        seconds = time.perf_counter() - started
        metrics = evaluation.evaluate_saved_model(
            out, evaluation.Holdout.of(feature_set.holdout, feature_set.priors)
        ).metrics
        return {
            "ratings": ratings,
            "fit_rows": result.train_rows,
            "replay_share": replay_share,
            "holdout_rows": int(metrics["rows"]),
            "auc": metrics["auc"],
            "logloss": metrics["logloss"],
            "seconds": seconds,
            "dir": out,
            "cutoff": feature_set.cutoff_ts,
        }

    ends = window_ends(everything.ratings, args.days, args.window_days)
    production = version(0, day_features(0, ends[0]))
    print(f"day 0: {production['ratings']:,} ratings, full AUC {production['auc']:.4f} ({production['seconds']:.1f} s)")
    rows = []
    for day, end in enumerate(ends[1:], start=1):
        previous = (warm_start.load_previous(production["dir"], day - 1), production["cutoff"])
        order = ("full", "warm") if day % 2 else ("warm", "full")
        built = day_features(day, end)
        done = {side: version(day, built, previous if side == "warm" else None) for side in order}
        full, warm = done["full"], done["warm"]
        rows.append(
            {"day": day, "first": order[0]}
            | {f"{side}_{key}": value for side in done for key, value in done[side].items() if key != "dir"}
        )
        print(
            f"day {day}: {full['ratings']:,} ratings, holdout {full['holdout_rows']:,}: full AUC {full['auc']:.4f} "
            f"({full['fit_rows']:,} rows, {full['seconds']:.1f} s), warm AUC {warm['auc']:.4f} "
            f"({warm['fit_rows']:,} rows, {warm['seconds']:.1f} s)"
        )
        production = warm

    print(format_table(name, rows))
    result = {
        "data": name,
        "kind": args.kind,
        "epochs": args.epochs,
        "window_days": args.window_days,
        "replay": dataclasses.asdict(warm_start.Replay.of(settings)),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "days": rows,
        "auc_difference_median": float(np.median([row["warm_auc"] - row["full_auc"] for row in rows])),
        "seconds_ratio_median": float(np.median([row["warm_seconds"] / row["full_seconds"] for row in rows])),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"warm-{name}.json").write_text(json.dumps(result, indent=2, default=float))


def format_table(name: str, rows: list[dict]) -> str:
    lines = [
        f"| {name} day | ratings | holdout | full AUC | warm AUC | warm - full | full s | warm s | warm / full time | rows fit full / warm |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['day']} | {row['full_ratings']:,} | {row['full_holdout_rows']:,} | {row['full_auc']:.4f} | "
            f"{row['warm_auc']:.4f} | {row['warm_auc'] - row['full_auc']:+.4f} | {row['full_seconds']:.1f} | "
            f"{row['warm_seconds']:.1f} | {row['warm_seconds'] / row['full_seconds']:.2f} | "
            f"{row['full_fit_rows']:,} / {row['warm_fit_rows']:,} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
