"""Parquet pages changed after Railyard wrote them (a disk, a copy) are refused naming the file,
wherever Railyard writes Parquet: generate-data, the event sink, feature folders, the Dask
build's partitions. Files from other tools, which carry no page checksums, still load."""

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from infra.online_store.stream import read_event_file, write_sink
from railyard import features, partitioned
from railyard.events import RatingEvent
from railyard.loaders import DataLoadError, load_dataset, parquet_layout
from railyard.synthetic import generate_movielens
from tests.support.parquet_pages import flip_bytes_silently


def test_a_page_changed_after_generate_data_wrote_it_is_refused_naming_the_file(tmp_path):
    """The issue's case: 64 bytes flipped inside a compressed page of a ratings partition turn
    hundreds of movieIds into other valid ids; loading must refuse the file, not pass them on."""
    data = tmp_path / "data"
    generate_movielens(data, users=300, movies=500, days=3, ratings_per_day=2_000, seed=7, fmt="parquet")
    damaged = parquet_layout(data)[0][1]
    assert flip_bytes_silently(damaged, "movieId") > 100
    with pytest.raises(DataLoadError) as refused:
        load_dataset(data)
    assert str(damaged) in str(refused.value) and "checksum" in str(refused.value)


def test_a_page_changed_in_a_file_the_event_sink_wrote_is_refused_naming_the_file(tmp_path):
    events = [
        (f"{1_000 + i}-0".encode(), RatingEvent(1 + i % 97, 1 + i * 7 % 389, 0.5 + i % 10 / 2, 1_767_225_600 + i))
        for i in range(2_000)
    ]
    (written,) = write_sink(tmp_path, events)
    assert load_dataset(tmp_path).ratings.height == 2_000
    flip_bytes_silently(written, "movieId")
    with pytest.raises(DataLoadError, match="checksum") as refused:
        load_dataset(tmp_path)
    assert str(written) in str(refused.value)
    with pytest.raises(DataLoadError, match="checksum") as refused:
        read_event_file(written)  # publish-events reads it the same way
    assert str(written) in str(refused.value)


def test_a_changed_feature_shard_is_refused_naming_the_shard(tmp_path):
    data = tmp_path / "data"
    generate_movielens(data, users=200, movies=300, days=3, ratings_per_day=1_500, seed=2, fmt="parquet")
    folder = features.write_feature_set(features.build_feature_set(load_dataset(data), 0.2), tmp_path / "features")
    (shard,) = features.shards(folder / "holdout")
    flip_bytes_silently(Path(shard.url), "movieId")
    with pytest.raises(DataLoadError, match="checksum") as refused:
        features.read_feature_set(folder, with_training_rows=False)
    assert shard.url in str(refused.value)


def test_a_changed_partition_of_the_dask_build_is_refused_naming_it(tmp_path):
    rng = np.random.default_rng(3)
    ratings = pl.DataFrame(
        {
            "userId": rng.integers(1, 500, 3_000),
            "movieId": rng.integers(1, 2_000, 3_000),
            "rating": rng.integers(1, 11, 3_000) / 2,
            "timestamp": np.sort(rng.integers(1_767_225_600, 1_767_312_000, 3_000)),
        }
    )
    partitioned.write_partitions(ratings, pl.Series([0] * 3_000), tmp_path / "by-user", "input")
    assert_frame_equal(partitioned.read_partition(tmp_path / "by-user", 0), ratings)
    written = tmp_path / "by-user" / "000000" / "input.parquet"
    flip_bytes_silently(written, "movieId")
    with pytest.raises(DataLoadError, match="checksum") as refused:
        partitioned.read_partition(tmp_path / "by-user", 0)
    assert str(written) in str(refused.value)


def test_files_written_by_other_tools_without_page_checksums_still_load(tmp_path):
    generated = tmp_path / "generated"
    generate_movielens(generated, users=50, movies=80, days=2, ratings_per_day=300, seed=1, fmt="parquet")
    expected = load_dataset(generated).ratings
    other = tmp_path / "other"
    for file in parquet_layout(generated)[0]:
        target = other / "ratings" / file.parent.name / file.name
        target.parent.mkdir(parents=True)
        pl.read_parquet(file).write_parquet(target)  # Polars' own writer: no page checksums
    assert_frame_equal(load_dataset(other).ratings, expected)


def test_training_refuses_a_shard_changed_under_it_naming_the_shard(tmp_path):
    """Training streams the shards' row groups through tf.data, which would report the damage as
    its own InvalidArgumentError: the shard's error comes out, naming it."""
    from railyard import training
    from railyard.kinds.registry import load_kind
    from railyard.settings import Settings

    data = tmp_path / "data"
    generate_movielens(data, users=200, movies=300, days=3, ratings_per_day=1_500, seed=2, fmt="parquet")
    folder = features.write_feature_set(features.build_feature_set(load_dataset(data), 0.2), tmp_path / "features")
    shard = features.shards(folder / "train")[0]
    flip_bytes_silently(Path(shard.url), "rating")  # a column only the streaming reads
    with pytest.raises(DataLoadError, match="checksum") as refused:
        training.train_model(
            folder, Settings(epochs=1, batch_size=256).train_config(), load_kind("neural_cf", embedding_dim=4)
        )
    assert shard.url in str(refused.value)
