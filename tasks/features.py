from dataclasses import asdict, replace
from pathlib import Path

from infra.online_store.consistency import check_store_partitioned
from infra.online_store.store import connect_url, store_url
from railyard import drift, features, loaders
from railyard.loaders import RawDataset
from railyard.locations import Location
from railyard.model_input import Warm
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task
from tasks.online import record_skew


@railyard_task(name="build-features", timeout_seconds=60 * MINUTES)
def build_features(
    dataset: RawDataset, settings: Settings, out_dir: Location, rows: Warm | None = None
) -> features.FeatureSet:
    """The feature folder ``out_dir`` (local or S3), built here with Polars; with ``rows`` (a warm
    start's), only those training rows are written (and validated): no other is read."""
    feature_set = features.build_feature_set(dataset, settings.holdout_fraction, rows.keeps if rows else None)
    features.write_feature_set(feature_set, out_dir, asdict(rows) if rows else None)
    return feature_set


@railyard_task(name="build-features-on-cluster", timeout_seconds=60 * MINUTES)
def build_features_on_cluster(
    source: Path, settings: Settings, out_dir: Location, scratch_dir: Path, report_dir: Path, run_id: str
) -> tuple[features.FeatureSet, dict]:
    """``RAILYARD_FEATURE_ENGINE=dask``: the feature folder ``out_dir`` (local or S3), built
    partitioned on the Dask cluster from the data set's files (Parquet partitions, or a
    ``ratings.csv`` the workers read in blocks; the build's partitions under ``scratch_dir``),
    which also validates the ratings and the features, measures the online store's skew
    (filling it when empty) and the window's statistics (railyard/drift.py) on the partitions.
    The ratings never pass through this process; the features come back without their training
    rows (training streams the shards), with the statistics."""
    from infra.dask_cluster import dask_client
    from railyard import partitioned

    ratings_files, movies_file = loaders.dataset_files(source)
    movies = loaders.read_movies(movies_file) if movies_file is not None else None
    source_files = sorted(ratings_files + ([movies_file] if movies_file is not None else []))
    fingerprint = features.feature_fingerprint(source_files, settings.holdout_fraction)
    url = store_url(settings)
    store = connect_url(url)

    statistics = drift.PartitionedStatistics(drift.genre_table(movies), settings.drift_span_days)
    kept = {}

    def build(per_key) -> partitioned.Built:
        with dask_client(settings) as client:
            built = partitioned.build_on_cluster(
                client,
                ratings_files,
                movies,
                settings.holdout_fraction,
                out_dir,
                fingerprint,
                settings.validation_bounds(),
                report_dir,
                scratch_dir=scratch_dir,
                per_key=partitioned.Together((per_key, statistics)),
            )
        skew, kept["statistics"] = built.per_key
        return replace(built, per_key=skew)

    genres = features.movie_genres(movies)
    filled, reports, _ = check_store_partitioned(store, url, genres, settings.skew_sample_size, settings.seed, build)
    record_skew(store, filled, reports, settings, run_id)
    return features.read_feature_set(out_dir, with_training_rows=False), kept["statistics"]
