from pathlib import Path

from railyard import loaders, synthetic
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task

# The small default data set `railyard run` generates on first use (ml-latest-small scale), as
# date partitions so that a stream consumer can append new days.
DEFAULT_DATA = dict(users=600, movies=1500, days=30, ratings_per_day=3000, seed=7, fmt="parquet")


@railyard_task(name="ensure-default-data", timeout_seconds=30 * MINUTES)
def ensure_default_data(settings: Settings) -> Path:
    out = settings.resolved_data_dir
    if not any((out / name).exists() for name in ("ratings", "ratings.csv")):
        synthetic.generate_movielens(out, **DEFAULT_DATA)
    return out


@railyard_task(name="load-data", timeout_seconds=30 * MINUTES)
def load_data(data_dir: Path) -> loaders.RawDataset:
    return loaders.load_dataset(Path(data_dir))
