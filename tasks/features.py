from pathlib import Path

from railyard import features, loaders
from railyard.loaders import RawDataset
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


@railyard_task(name="build-features", timeout_seconds=60 * MINUTES)
def build_features(
    dataset: RawDataset, source: Path, settings: Settings, out_dir: Path, report_dir: Path
) -> features.FeatureSet:
    """The feature folder under ``out_dir``, built by ``RAILYARD_FEATURE_ENGINE``: here with
    Polars, or partitioned on a Dask cluster from the data set's Parquet files (which validates
    the ratings and the features on the workers as it goes; the training rows then stay in their
    shards, which training streams)."""
    if settings.feature_engine == "dask":
        from infra.dask_cluster import dask_client
        from railyard import partitioned

        ratings_files, _ = loaders.parquet_layout(source)  # the movies are in the dataset already
        fingerprint = features.feature_fingerprint(dataset.source_files, settings.holdout_fraction)
        with dask_client(settings) as client:
            partitioned.build_on_cluster(
                client,
                ratings_files,
                dataset.movies,
                settings.holdout_fraction,
                out_dir,
                fingerprint,
                settings.validation_bounds(),
                report_dir,
            )
        return features.read_feature_set(out_dir, with_training_rows=False)
    feature_set = features.build_feature_set(dataset, settings.holdout_fraction)
    features.write_feature_set(feature_set, out_dir)
    return feature_set
