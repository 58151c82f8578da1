"""The drift statistics' cost beside the daily run (target: under 5 % of it).

    uv run python -m bench.bench_drift --size 1m --flow
    uv run python -m bench.bench_drift --size 25m

Each size: ``bench.run``'s cached generated data set (generated on first use), loaded once; the
window's statistics (``railyard.drift.statistics``, what a daily run computes with Polars)
timed beside the feature build (``features.build_feature_set``) on the same data in the same
process, best of ``--rounds`` each, with each one's peak RSS. With ``--flow``, also the whole
retrain flow once on the data (a fresh home, auto-approved, with what a daily run finds running
started first, as ``bench.run`` runs it), then again on the same data (it compares with the
first run's version), and the share of the first run's wall time that the statistics task of
the first and the check of the second took (``window-statistics``, ``drift-check``, as Prefect
recorded them). Results go to stdout
and to bench/results/drift-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from bench.run import RESULTS_DIR, SIZES, dataset, peak_rss_mib, reset_peak_rss, scratch_home, whole_flow


def best_of(rounds: int, call) -> tuple[float, float]:
    """The best wall time of ``rounds`` calls, and the peak RSS over them (MiB)."""
    reset_peak_rss()
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best, peak_rss_mib()


def measure(data, settings, rounds: int) -> dict:
    """The statistics beside the feature build, on one loaded data set."""
    from railyard import drift, features

    statistics_s, statistics_rss = best_of(
        rounds, lambda: drift.statistics(data.ratings, data.movies, settings.drift_span_days)
    )
    features_s, features_rss = best_of(rounds, lambda: features.build_feature_set(data, settings.holdout_fraction))
    return {
        "ratings": data.ratings.height,
        "statistics_s": round(statistics_s, 3),
        "statistics_peak_rss_mib": round(statistics_rss, 1),
        "feature_build_s": round(features_s, 3),
        "feature_build_peak_rss_mib": round(features_rss, 1),
        "statistics_vs_feature_build": round(statistics_s / features_s, 4),
        "statistics_json_bytes": len(json.dumps(drift.statistics(data.ratings, data.movies, 1))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1m")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flow", action="store_true", help="also the whole retrain flow once, and its drift tasks")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    scratch = scratch_home("railyard-bench-drift-", args.epochs)
    from railyard import loaders
    from railyard.runtime import prepare_environment
    from railyard.settings import Settings

    settings = Settings()
    prepare_environment(settings.home, settings.tf_log_level)
    data_dir = dataset(args.size, Settings(home=os.environ.get("RAILYARD_BENCH_CACHE", ".railyard")).home)
    result: dict = {"size": args.size}
    try:
        result |= measure(loaders.load_dataset(data_dir), settings, args.rounds)
        if args.flow:
            # The first run has nothing to compare with; the second, on the same data, compares
            # with the first one's version (production now) and then finds nothing new to release.
            flow_s, _, first, _ = whole_flow(data_dir, args.epochs, settings)
            _, _, second, _ = whole_flow(data_dir, args.epochs, settings)
            spent = first["window-statistics"] + second["drift-check"]
            result |= {
                "flow_s": round(flow_s, 3),
                "flow_window_statistics_s": first["window-statistics"],
                "flow_drift_check_s": second["drift-check"],
                "drift_share_of_flow": round(spent / flow_s, 4),
            }
    finally:
        from infra.local_server import background
        from infra.online_store import valkey_process

        background.stop(settings.local_serving_dir)
        valkey_process.stop(settings)
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"drift-{args.size}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
