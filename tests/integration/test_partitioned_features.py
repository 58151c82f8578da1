"""The partitioned feature build (railyard/partitioned.py) on a real Dask LocalCluster of two
worker processes: the same feature folder as the one-machine Polars build, row for row."""

import json
import re

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from infra.online_store import keys
from infra.online_store.consistency import ALL_EVENTS, check_store_partitioned, measure_skew, offline_samples
from infra.online_store.store import OnlineStore
from infra.online_store.stream import Ingester, publish
from railyard import drift, feature_folder, features, partitioned
from railyard import feature_spec as spec
from railyard.loaders import RATINGS_SCHEMA, DataLoadError, dataset_files, load_dataset, parquet_layout, read_movies
from railyard.locations import Location, read_parquet
from railyard.settings import Settings
from railyard.synthetic import generate_movielens
from railyard.validation import DataValidationError
from tests.support.approx import assert_close
from tests.support.online_store import THROWAWAY, as_events, assert_store_matches

pytestmark = pytest.mark.timeout(300)
BOUNDS = Settings().validation_bounds()


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from distributed import Client, LocalCluster

    spill = tmp_path_factory.mktemp("dask")
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit="2GiB",
            local_directory=str(spill),
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def build_on_dask(
    client, data, out_dir, report_dir, *, rows_per_partition: int, per_key=None, scratch_dir=None, **options
) -> partitioned.Built:
    """The partitioned build of a data set, holdout 0.2, as the flow's task calls it."""
    files, movies_file = dataset_files(data)
    fingerprint = features.feature_fingerprint(sorted([*files, movies_file]), 0.2)
    return partitioned.build_on_cluster(
        client,
        files,
        read_movies(movies_file),
        0.2,
        out_dir,
        fingerprint,
        BOUNDS,
        report_dir,
        scratch_dir=scratch_dir,
        per_key=per_key,
        rows_per_partition=rows_per_partition,
        **options,
    )


def assert_same_folders(built, expected) -> None:
    """Every split (its shards in order) and snapshot equal, row for row and bit for bit."""
    built, expected = Location.of(built), Location.of(expected)
    for split in feature_folder.SPLITS:
        assert_frame_equal(
            read_parquet(features.shards(built / split)),
            read_parquet(features.shards(expected / split)),
            check_exact=True,
        )
    for name in feature_folder.SNAPSHOT_FILES:
        assert_frame_equal(read_parquet([built / name]), read_parquet([expected / name]), check_exact=True)


def spread(column: str) -> pl.Expr:
    """Small ids mapped one to one onto ids spread over the positive int64 range."""
    return (pl.col(column).cast(pl.UInt64) * 0x9E3779B97F4A7C15 % (2**63 - 2) + 1).cast(pl.Int64)


@pytest.fixture(scope="module")
def awkward_data(tmp_path_factory):
    """Generated date-partitioned ratings made awkward: ids spread over int64, many ratings of one
    user and of one movie tied at one second, rows repeated in all four columns in a second
    file of another partition, and in a third file there, later ratings of rated events (the
    first rating wins)."""
    root = tmp_path_factory.mktemp("awkward")
    generated = root / "generated"
    generate_movielens(generated, users=300, movies=200, days=6, ratings_per_day=1500, seed=3, fmt="parquet")
    ratings = pl.read_parquet(generated / "ratings" / "**" / "*.parquet").cast(RATINGS_SCHEMA)
    ratings = ratings.with_columns(spread("userId"), spread("movieId"))
    # Ties: every rating in each tenth minute shares that minute's first second.
    ratings = ratings.with_columns(
        pl.when((pl.col("timestamp") // 60) % 10 == 0)
        .then(pl.col("timestamp") // 60 * 60)
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    ).unique(["userId", "movieId", "timestamp"], keep="first", maintain_order=True)
    data = root / "data"
    day = pl.from_epoch("timestamp").dt.date().alias("day")
    for (date,), part in ratings.with_columns(day).partition_by("day", as_dict=True).items():
        folder = data / "ratings" / f"date={date}"
        folder.mkdir(parents=True)
        part.drop("day").write_parquet(folder / "part-0.parquet")
    repeated = ratings.sample(200, seed=1)
    repeated.write_parquet(sorted((data / "ratings").iterdir())[-1] / "part-1.parquet")
    rerated = ratings.sample(50, seed=2).with_columns(
        rating=5.5 - pl.col("rating")
    )  # another half step, never the same
    rerated.write_parquet(sorted((data / "ratings").iterdir())[-1] / "part-2.parquet")
    movies = pl.read_csv(generated / "movies.csv")
    movies.with_columns(spread("movieId")).write_csv(data / "movies.csv")
    return data


def test_the_dask_build_equals_the_polars_build_row_for_row(client, awkward_data, tmp_path):
    dataset = load_dataset(awkward_data)
    assert (dataset.duplicates_dropped, dataset.conflicts_dropped) == (250, 50)
    ratings = dataset.ratings
    assert ratings.get_column("userId").max() > 2**62 and ratings.get_column("movieId").max() > 2**62
    assert ratings.group_by("userId", "timestamp").len().get_column("len").max() > 1  # ties of one user
    assert ratings.group_by("movieId", "timestamp").len().get_column("len").max() > 1  # and of one movie

    one_machine = features.write_feature_set(features.build_feature_set(dataset, 0.2), tmp_path / "polars")
    meta = build_on_dask(client, awkward_data, tmp_path / "dask", tmp_path / "reports", rows_per_partition=1_500).meta

    assert meta == json.loads((one_machine / "meta.json").read_text())
    assert meta["rows"]["train"] > 1_000 and meta["rows"]["holdout"] > 1_000
    assert_same_folders(tmp_path / "dask", one_machine)
    assert len(features.shards(tmp_path / "dask" / "train")) > 1  # one shard per time partition
    holdout = read_parquet(features.shards(tmp_path / "dask" / "holdout"))
    assert holdout.get_column("movie_genres").arr.sum().min() >= 1  # the catalogue joined on the spread ids
    assert np.all(np.diff(holdout.get_column("timestamp").to_numpy()) >= 0)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["dask", "polars", "reports"]  # no scratch left


@pytest.fixture(scope="module")
def csv_data(awkward_data, tmp_path_factory):
    """The awkward ratings in MovieLens' own layout (as ml-25m ships): ratings.csv, with an extra
    column whose quoted values hold commas, doubled quotes and line breaks (the loader ignores
    it; a block must never start inside one), and movies.csv with quoted titles."""
    dataset = load_dataset(awkward_data)
    folder = tmp_path_factory.mktemp("movielens")
    note = pl.when(pl.int_range(pl.len()) % 7 == 0).then(pl.lit('seen twice, "loved" it\nreally')).otherwise(None)
    dataset.ratings.with_columns(note.alias("note")).write_csv(folder / "ratings.csv")
    dataset.movies.with_columns(pl.col("title") + ', The "Cut"').write_csv(folder / "movies.csv")
    return folder


def test_an_aggregate_declared_in_one_place_reaches_both_builds_the_store_and_the_skew_check(
    awkward_data, online_store, railyard_home, tmp_path, monkeypatch
):
    """A throwaway aggregate, added to the declarations and nowhere else (the replay parity
    check carries it too: tests/integration/test_online_replay.py)."""
    monkeypatch.setattr(spec, "MOVIE_AGGREGATES", (*spec.MOVIE_AGGREGATES, THROWAWAY))
    dataset = load_dataset(awkward_data)
    one_machine = features.write_feature_set(features.build_feature_set(dataset, 0.2), tmp_path / "polars")

    # Offline: per row, the squared ratings of the movie's earlier ratings (ties at one second excluded).
    rows = pl.concat([read_parquet(features.shards(one_machine / split)) for split in feature_folder.SPLITS])
    earlier = dataset.ratings.select("movieId", pl.col("timestamp").alias("then"), "rating")
    expected = (
        rows.select("movieId", "timestamp")
        .unique()
        .join(earlier, on="movieId")
        .filter(pl.col("then") < pl.col("timestamp"))
        .group_by("movieId", "timestamp")
        .agg((pl.col("rating") ** 2).sum().alias("want"))
    )
    checked = rows.join(expected, on=["movieId", "timestamp"], how="left").with_columns(pl.col("want").fill_null(0))
    assert checked.get_column("movie_rating_sq").to_list() == checked.get_column("want").to_list()
    assert checked.get_column("want").max() > 100

    # Dask, on a cluster of threads of this process (whose workers see the declaration): the same folder.
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as threads,
    ):
        build_on_dask(threads, awkward_data, tmp_path / "dask", tmp_path / "reports", rows_per_partition=1_500)
    assert_same_folders(tmp_path / "dask", one_machine)

    # Online: half of the events rebuilt from batch data, half applied from the stream by `ingest`
    # (through a store opened now: a store generates its scripts from the declarations when opened).
    online_store = OnlineStore(online_store.client)
    ratings = dataset.ratings.sort("timestamp")
    online_store.rebuild(ratings.head(ratings.height // 2), dataset.movies)
    publish(online_store, as_events(ratings.tail(ratings.height - ratings.height // 2)))
    assert Ingester(online_store, railyard_home / "data", groups=["online"]).run(until_idle=True).applied > 4_000
    assert_store_matches(online_store, ratings, dataset.movies)

    # The skew check compares it with the rest: no skew, until one movie's value is off.
    assert [report.skewed for report in measure_skew(online_store, ratings, dataset.movies, 1_000, seed=1)] == [0, 0]
    movie = int(ratings.get_column("movieId")[0])
    online_store.client.hincrbyfloat(keys.movie_key(online_store.namespace(), movie), THROWAWAY.field, 0.25)
    _, movies = measure_skew(online_store, ratings, dataset.movies, 1_000, seed=1)
    assert movies.skewed == 1 and movies.max_difference == 0.25


def test_a_movielens_csv_folder_is_read_in_blocks_on_the_workers_into_the_same_folder(client, csv_data, tmp_path):
    """RAILYARD_FEATURE_ENGINE=dask on ratings.csv + movies.csv: the workers read the file in
    blocks, and the folder (its meta.json with the data fingerprint included) equals the Polars
    build's from the same folder."""
    assert '"loved"" it\nreally' in (csv_data / "ratings.csv").read_text()
    assert ', The ""Cut""' in (csv_data / "movies.csv").read_text()
    dataset = load_dataset(csv_data)
    one_machine = features.write_feature_set(features.build_feature_set(dataset, 0.2), tmp_path / "polars")
    built = build_on_dask(
        client, csv_data, tmp_path / "dask", tmp_path / "reports", rows_per_partition=1_500, csv_block_bytes=32_768
    )
    assert built.meta == json.loads((one_machine / "meta.json").read_text())
    assert built.meta["fingerprint"] == features.feature_fingerprint(dataset.source_files, 0.2)
    assert_same_folders(tmp_path / "dask", one_machine)
    blocks = sorted((tmp_path / "reports" / "partitions" / "raw_ratings@ratings.csv").glob("data-rows-*.html"))
    assert len(blocks) > 10  # each block checked on its own
    numbered = sorted(tuple(map(int, path.stem.rsplit("-", 2)[1:])) for path in blocks)
    assert numbered[0][0] == 1 and numbered[-1][1] == dataset.ratings.height
    assert all(later[0] == earlier[1] + 1 for earlier, later in zip(numbered, numbered[1:]))


def _csv_folder(folder, change_data_row: int, change) -> tuple:
    """A generated MovieLens folder with data row ``change_data_row`` of ratings.csv replaced by
    ``change(fields)``; the folder and the changed line as `sed -n` prints it."""
    generate_movielens(folder, users=200, movies=100, days=4, ratings_per_day=800, seed=8)
    lines = (folder / "ratings.csv").read_text().splitlines()
    lines[change_data_row] = ",".join(change(lines[change_data_row].split(",")))
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return folder, lines[change_data_row]


def test_a_bad_row_in_a_block_of_ratings_csv_stops_the_build_naming_the_file_and_its_data_row(client, tmp_path):
    data, line = _csv_folder(tmp_path / "data", 2_345, lambda fields: [*fields[:2], "7.0", fields[3]])
    assert (data / "ratings.csv").read_text().splitlines()[2_346 - 1] == line  # data row 2345 is line 2346
    with pytest.raises(DataValidationError) as failed:
        build_on_dask(
            client, data, tmp_path / "features", tmp_path / "reports", rows_per_partition=1_000, csv_block_bytes=8_192
        )
    message = str(failed.value)
    ((first, last),) = re.findall(r"suite raw_ratings@ratings.csv/data-rows-(\d+)-(\d+):", message)
    assert 1 < int(first) <= 2_345 <= int(last)
    assert "rating within 0.5..5.0: 1 unexpected rows (data rows 2345), e.g. [7.0]" in message
    assert not (tmp_path / "features").exists()


def test_a_value_that_does_not_parse_in_a_block_is_refused_as_the_loader_refuses_it(client, tmp_path):
    data, _ = _csv_folder(tmp_path / "data", 2_345, lambda fields: [*fields[:2], "good", fields[3]])
    with pytest.raises(DataLoadError) as loaded:
        load_dataset(data)
    with pytest.raises(DataLoadError) as built:
        build_on_dask(
            client, data, tmp_path / "features", tmp_path / "reports", rows_per_partition=1_000, csv_block_bytes=8_192
        )
    assert str(built.value) == str(loaded.value)
    assert "ratings.csv: column 'rating' must be a number, but data row 2345 (line 2346) holds 'good'" in str(
        built.value
    )
    assert not (tmp_path / "features").exists()


def test_ratings_csv_keeps_the_first_rating_of_an_event_on_either_engine(client, tmp_path):
    """First wins in a CSV file as on the stream: a row repeated in every column and a later,
    different rating of the same event are dropped, in blocks on the workers as by the loader."""
    data, line = _csv_folder(tmp_path / "data", 1_500, lambda fields: fields)
    user, movie, rating, timestamp = line.split(",")
    other = "1.0" if float(rating) != 1.0 else "5.0"
    with open(data / "ratings.csv", "a") as ratings:
        ratings.write(f"{line}\n{user},{movie},{other},{timestamp}\n")
    dataset = load_dataset(data)
    assert dataset.duplicates_dropped == 2 and dataset.conflicts_dropped == 1
    one_machine = features.write_feature_set(features.build_feature_set(dataset, 0.2), tmp_path / "polars")
    built = build_on_dask(
        client, data, tmp_path / "dask", tmp_path / "reports", rows_per_partition=1_000, csv_block_bytes=8_192
    )
    assert built.meta == json.loads((one_machine / "meta.json").read_text())
    assert_same_folders(tmp_path / "dask", one_machine)


def namespace_contents(store, namespace: str) -> dict:
    """Every key of one namespace (its name cut off) and its value; the build time left out."""
    prefix = f"{keys.NAMESPACES}{namespace}:"
    contents = {}
    for key in store.client.scan_iter(match=prefix + "*", count=1_000):
        kind, name = store.client.type(key).decode(), key.decode().removeprefix(prefix)
        if kind == "hash":
            contents[name] = store.client.hgetall(key)
        elif kind == "set":
            contents[name] = store.client.smembers(key)
        else:
            contents[name] = store.client.zrange(key, 0, -1, withscores=True)
    contents["meta"].pop(b"built_at")
    return contents


def test_an_empty_online_store_is_filled_on_the_partitions_as_a_rebuild_fills_it_and_sampled_alike(
    client, awkward_data, online_store, online_store_server, tmp_path
):
    """The skew check on a partitioned build: an empty store gets, from the workers, exactly the
    namespace ``OnlineStore.rebuild`` writes from every rating in one process; the partitions'
    samples put together are the sample the one-machine check draws; no skew either way."""
    dataset = load_dataset(awkward_data)
    genres = features.movie_genres(dataset.movies)

    def check(out: str):
        return check_store_partitioned(
            online_store,
            online_store_server,
            genres,
            40,
            7,
            lambda per_key: build_on_dask(
                client, awkward_data, tmp_path / out, tmp_path / "reports", rows_per_partition=1_500, per_key=per_key
            ),
        )

    filled, reports, built = check("first")
    assert filled and [(r.sampled, r.skewed) for r in reports] == [(40, 0), (40, 0)]
    from_workers = online_store.namespace()
    users, movies = built.per_key
    assert users.events == dataset.ratings.height  # distinct events, the repeated rows counted once
    expected = offline_samples(dataset.ratings, genres, ALL_EVENTS, 40, 7)
    assert_frame_equal(users.totals, expected[0], check_exact=True)
    assert_frame_equal(movies.totals, expected[1], check_exact=True)
    assert online_store.state()["last_event_ts"] == dataset.ratings.get_column("timestamp").max()
    filled_on_workers = namespace_contents(online_store, from_workers)

    rebuilt = online_store.rebuild(dataset.ratings, dataset.movies)
    assert namespace_contents(online_store, rebuilt) == filled_on_workers
    assert len(filled_on_workers) > 600  # users, movies, markers, rated sets, popularity, genres, meta

    filled, reports, _ = check("second")  # a store with features: sampled as of its last event
    assert not filled and online_store.namespace() == rebuilt
    assert [(r.sampled, r.skewed) for r in reports] == [(40, 0), (40, 0)]


def test_the_flows_build_step_on_a_local_cluster_never_loads_the_ratings_in_its_process(
    awkward_data, csv_data, online_store, tmp_path, monkeypatch
):
    import mlflow

    from railyard import loaders
    from tasks.features import build_features_on_cluster

    def refused(*_):
        raise AssertionError("the ratings were read in the driver")

    dataset = load_dataset(awkward_data)
    for name in ("load_dataset", "load_parquet_partitions", "read_parquet_files"):
        monkeypatch.setattr(loaders, name, refused)
    settings = Settings(
        home=tmp_path / "home",
        feature_engine="dask",
        dask_workers=2,
        dask_worker_memory="1GiB",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    run_id = mlflow.MlflowClient().create_run(mlflow.set_experiment("dask").experiment_id).info.run_id
    built, statistics = build_features_on_cluster.fn(
        awkward_data, settings, Location.of(tmp_path / "dask"), tmp_path / "scratch", tmp_path / "reports", run_id
    )
    # The window's drift statistics, on the partitions beside the skew check: those of one machine.
    assert statistics["span"]["rows"] > 0
    assert_close(statistics, drift.statistics(dataset.ratings, dataset.movies, settings.drift_span_days))
    expected = features.build_feature_set(dataset, settings.holdout_fraction)
    assert (built.cutoff_ts, built.priors, built.fingerprint) == (
        expected.cutoff_ts,
        expected.priors,
        expected.fingerprint,
    )
    assert_frame_equal(built.holdout, expected.holdout, check_exact=True)
    assert built.train.is_empty() and built.train.schema == expected.train.schema  # not read into this process
    assert (settings.home / "dask").is_dir()  # the local workers' spill folder
    assert online_store.namespace() is not None  # filled on the workers
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    assert metrics["online_skew_share_users"] == 0 and metrics["online_skew_share_movies"] == 0

    # MovieLens' own layout (ratings.csv + movies.csv) too, read on the workers in blocks.
    from_csv = features.build_feature_set(load_dataset(csv_data), settings.holdout_fraction)
    for name in ("load_movielens_dir", "read_csv_block"):
        monkeypatch.setattr(loaders, name, refused)
    monkeypatch.setattr(partitioned, "read_csv_block", refused)
    built, _ = build_features_on_cluster.fn(
        csv_data, settings, Location.of(tmp_path / "csv-features"), tmp_path / "scratch", tmp_path / "reports", run_id
    )
    assert (built.cutoff_ts, built.priors, built.fingerprint) == (
        from_csv.cutoff_ts,
        from_csv.priors,
        from_csv.fingerprint,
    )
    assert built.fingerprint != expected.fingerprint  # the same notion: the files read, not the rows
    assert_frame_equal(built.holdout, from_csv.holdout, check_exact=True)


def test_a_worker_killed_during_the_build_is_replaced_and_the_folder_and_the_store_are_still_exact(
    client, online_store, online_store_server, tmp_path
):
    """SIGKILL one worker process while the user partitions are being built and written into an
    empty online store: the nanny starts a new one, Dask runs the lost tasks again (they read and
    write files; their store writes are idempotent), and both the folder and the filled store
    equal the one-machine results. Meanwhile readers see no features and a second rebuild is
    refused."""
    import os
    import signal
    import threading
    import time

    from infra.online_store.store import RebuildRunning

    data = tmp_path / "data"
    generate_movielens(data, users=3_000, movies=1_000, days=10, ratings_per_day=20_000, seed=5, fmt="parquet")
    dataset = load_dataset(data)
    genres = features.movie_genres(dataset.movies)
    outcome = {}

    def build():
        outcome["checked"] = check_store_partitioned(
            online_store,
            online_store_server,
            genres,
            40,
            7,
            lambda per_key: build_on_dask(
                client, data, tmp_path / "dask", tmp_path / "reports", rows_per_partition=25_000, per_key=per_key
            ),
        )

    builder = threading.Thread(target=build)
    builder.start()
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".dask.partitions-*/by-movie")):  # the user partitions are under way
        assert time.monotonic() < deadline and builder.is_alive(), "the build never reached the user partitions"
        time.sleep(0.005)
    victim = sorted(client.run(os.getpid).values())[0]
    os.kill(victim, signal.SIGKILL)
    assert not (tmp_path / "dask").exists()  # nothing published while the build runs
    assert online_store.namespace() is None  # nor the half-filled store
    with pytest.raises(RebuildRunning):
        online_store.rebuild(dataset.ratings.head(10), None)  # a second run's fill waits its turn
    builder.join(240)
    assert "checked" in outcome, "the build did not finish"
    assert victim not in client.run(os.getpid).values()  # a new worker process took its place

    filled, reports, built = outcome["checked"]
    assert filled and [(r.sampled, r.skewed) for r in reports] == [(40, 0), (40, 0)]
    one_machine = features.write_feature_set(features.build_feature_set(dataset, 0.2), tmp_path / "polars")
    assert built.meta == json.loads((one_machine / "meta.json").read_text())
    assert_same_folders(tmp_path / "dask", one_machine)
    filled_on_workers = namespace_contents(online_store, online_store.namespace())
    assert namespace_contents(online_store, online_store.rebuild(dataset.ratings, dataset.movies)) == filled_on_workers


def test_a_bad_row_in_one_file_stops_the_build_naming_the_expectation_the_file_and_the_row(client, tmp_path):
    data = tmp_path / "data"
    generate_movielens(data, users=200, movies=100, days=4, ratings_per_day=800, seed=8, fmt="parquet")
    broken = parquet_layout(data)[0][2]
    ratings = pl.read_parquet(broken)
    ratings.with_columns(
        pl.when(pl.int_range(pl.len()) == 17).then(7.0).otherwise(pl.col("rating")).alias("rating")
    ).write_parquet(broken)
    with pytest.raises(DataValidationError) as failed:
        build_on_dask(client, data, tmp_path / "features", tmp_path / "reports", rows_per_partition=1_000)
    message = str(failed.value)
    where = f"raw_ratings@{broken.parent.name}/{broken.name}"
    assert f"suite {where}:" in message
    assert (
        "expect_column_values_to_be_between(column=rating): rating within 0.5..5.0: 1 unexpected rows (data rows 18), e.g. [7.0]"
        in message
    )
    assert message.count("FAILED") == 2  # the range and the half-star set, in that file only
    assert not (tmp_path / "features").exists()  # nothing for training to read
    assert (tmp_path / "reports" / "partitions" / f"{where}.html").is_file()


def test_the_feature_folder_on_s3_from_either_engine_and_training_streams_it_from_there(
    awkward_data, s3_bucket, tmp_path
):
    """RAILYARD_FEATURES_URI=s3://…: the Polars build writes the folder to S3, a LocalCluster
    whose workers take their credentials from their environment writes the same folder there
    (partitions in a local scratch folder), and training streams its shards from S3."""
    from distributed import Client, LocalCluster

    from railyard import training
    from railyard.kinds.registry import load_kind

    dataset = load_dataset(awkward_data)
    local = features.write_feature_set(features.build_feature_set(dataset, 0.2), tmp_path / "polars")
    on_s3 = Location.of(s3_bucket.uri("features/polars"), s3_bucket.endpoint_url)
    assert on_s3.is_s3 and features.write_feature_set(features.build_feature_set(dataset, 0.2), on_s3) == on_s3
    assert_same_folders(on_s3, local)
    keys = [item["Key"] for item in s3_bucket.client().list_objects_v2(Bucket=s3_bucket.name)["Contents"]]
    assert "features/polars/meta.json" in keys and "features/polars/train/part-000000.parquet" in keys

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB", dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        built = build_on_dask(
            client,
            awkward_data,
            Location.of(s3_bucket.uri("features/dask"), s3_bucket.endpoint_url),
            tmp_path / "reports",
            rows_per_partition=1_500,
            scratch_dir=tmp_path / "scratch",
        )
    on_s3_from_dask = Location.of(s3_bucket.uri("features/dask"), s3_bucket.endpoint_url)
    assert built.meta == json.loads((on_s3_from_dask / "meta.json").read_text())
    assert_same_folders(on_s3_from_dask, local)
    assert len(features.shards(on_s3_from_dask / "train")) > 1
    assert list((tmp_path / "scratch").iterdir()) == []  # the partitions are gone

    trained = training.train_model(on_s3_from_dask, Settings(epochs=1).train_config(), load_kind("neural_cf"))
    assert trained.train_rows + trained.validation_rows == built.meta["rows"]["train"]
    assert len(trained.history["loss"]) == 1
    assert features.read_feature_set(on_s3_from_dask, with_training_rows=False).fingerprint == built.meta["fingerprint"]
