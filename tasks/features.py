from pathlib import Path

from railyard import features
from railyard.loaders import RawDataset
from tasks.common import MINUTES, railyard_task


@railyard_task(name="build-features", timeout_seconds=60 * MINUTES)
def build_features(dataset: RawDataset, holdout_fraction: float, out_dir: Path) -> features.FeatureSet:
    feature_set = features.build_feature_set(dataset, holdout_fraction)
    features.write_feature_set(feature_set, out_dir)
    return feature_set
