"""Training throughput of every shipped model kind, each beside a plain ``model.fit`` of the same
network on the same rows held in memory, in one run.

    uv run python -m bench.bench_kinds --size 5m [--epochs 2]

For each kind in ``railyard.kinds.registry.KINDS``: the same freshly seeded network, batch size and
epochs, fed once by the tf.data pipeline streaming the feature folder's Parquet shards (what
training uses) and once by ``model.fit`` on the training split as in-memory NumPy arrays
(``bench.run.training_input_baseline``; the two sides alternate and each keeps its best). The
features are built once, from the cached generated data set of ``--size``. Results: stdout and
bench/results/kinds-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from bench.run import BASELINE_SIZES, RESULTS_DIR, dataset, training_input_baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=BASELINE_SIZES, default="5m")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="railyard-bench-kinds-"))
    os.environ.update(RAILYARD_HOME=str(scratch / "home"), RAILYARD_EPOCHS=str(args.epochs))
    from railyard import feature_folder, features
    from railyard.kinds.registry import KINDS
    from railyard.loaders import load_dataset
    from railyard.settings import Settings

    cache_home = Settings(home=os.environ.get("RAILYARD_BENCH_CACHE", ".railyard")).home
    data = load_dataset(dataset(args.size, cache_home))
    feature_dir = scratch / "features"
    feature_folder.write_feature_set(features.build_feature_set(data, Settings().holdout_fraction), feature_dir)
    del data
    kinds = {}
    for kind in KINDS:
        kinds[kind] = training_input_baseline(feature_dir, Settings(model_kind=kind))
        print(
            f"{kind:<10} tf.data {kinds[kind]['tf_data_examples_per_s']:>9,} examples/s, in-memory "
            f"{kinds[kind]['in_memory_examples_per_s']:>9,} examples/s: streamed / in-memory "
            f"{kinds[kind]['throughput_ratio']:.2f}",
            flush=True,
        )
    result = {"size": args.size, "epochs": args.epochs, "machine": platform.machine(), "kinds": kinds}
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / f"kinds-{args.size}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
