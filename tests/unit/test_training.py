"""Training any kind: the validation window carved from the end of the training period (never the
holdout), a kind's own output name through the export, its own fit, and networks refused."""

from __future__ import annotations

import shutil
from dataclasses import asdict

import numpy as np
import polars as pl
import pytest

from railyard import contract, evaluation, export, features, model_input, training
from railyard.kinds.base import KindConfig
from railyard.kinds.registry import load_kind
from railyard.loaders import load_dataset
from railyard.locations import read_parquet
from railyard.settings import Settings
from railyard.synthetic import generate_movielens

CONFIG = Settings(epochs=2, batch_size=256, seed=1).train_config()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    generate_movielens(root / "data", users=80, movies=120, days=5, ratings_per_day=500, seed=4)
    feature_set = features.build_feature_set(load_dataset(root / "data"), holdout_fraction=0.2)
    features.write_feature_set(feature_set, root / "features")
    return root / "features", feature_set


class RatesConfig(KindConfig):
    l2: float = 0.0


class Rates:
    """Logistic regression over two declared counts, with an output of its own name."""

    name = "rates"
    Config = RatesConfig
    reads = ("user_positives", "user_n")
    output = "probability"

    def build(self, context, config):
        import keras

        inputs = context.inputs()
        x = keras.layers.Concatenate()([context.select(inputs, name) for name in self.reads])
        return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.ops.log1p(x)))


class OwnFit(Rates):
    name = "own_fit"
    seen: dict = {}

    def fit(self, model, data, context, config):
        self.seen.update(train=data.train_rows, validation=data.validation_rows, callbacks=len(data.callbacks))
        return model.fit(data.train, epochs=1, shuffle=False, verbose=0, callbacks=data.callbacks).history


class TwoOutputs(Rates):
    name = "two_outputs"

    def build(self, context, config):
        import keras

        inputs = context.inputs()
        x = context.select(inputs, "user_n")
        return keras.Model(inputs, [keras.layers.Dense(1)(x), keras.layers.Dense(1)(x)])


def test_the_validation_window_is_the_newest_share_of_the_training_rows(folder):
    feature_dir, feature_set = folder
    windows = model_input.carve_validation(feature_dir / "train", 0.1)
    train = feature_set.train
    fit = train.filter(pl.col("timestamp") < windows.validation_from)
    validation = train.filter(pl.col("timestamp") >= windows.validation_from)
    assert (windows.fit_rows, windows.validation_rows) == (len(fit), len(validation))
    assert 0.05 * len(train) < len(validation) <= 0.1 * len(train) + 1  # about a tenth, ties on one side
    assert fit["timestamp"].max() < validation["timestamp"].min()
    assert validation["timestamp"].max() < feature_set.cutoff_ts  # before the holdout's cut-off
    # The vocabularies are the fit rows' ids: a user first seen in the window is unknown to the network.
    np.testing.assert_array_equal(windows.user_ids, np.sort(fit["userId"].unique().to_numpy()))
    assert set(validation["userId"].to_list()) - set(windows.user_ids.tolist())
    rows = sum(len(labels) for _, labels in windows.validation_dataset(64))
    assert rows == len(validation)


def test_training_stops_on_the_validation_window_and_never_reads_the_holdout(folder, tmp_path):
    feature_dir, _ = folder
    without_holdout = tmp_path / "features"
    shutil.copytree(feature_dir, without_holdout)
    shutil.rmtree(without_holdout / "holdout")
    result = training.train_model(without_holdout, CONFIG, load_kind("neural_cf", embedding_dim=4))
    assert len(result.history["val_auc"]) == len(result.history["loss"]) >= 1
    assert (
        result.validation_rows > 0
        and result.train_rows + result.validation_rows == features.read_feature_set(feature_dir).train.height
    )


def test_a_kind_names_its_output_and_both_signatures_serve_it(folder, tmp_path):
    feature_dir, feature_set = folder
    kind = load_kind(f"{__name__}:Rates")
    result = training.train_model(feature_dir, CONFIG, kind)
    export_dir = export.export_serving_model(
        result.model, feature_set, tmp_path / "export", kind=kind.name, output=kind.output
    )
    for name in contract.SIGNATURES:
        assert list(export.load_signature(export_dir, name).structured_outputs) == ["probability"]
    assert contract.read_contract(export_dir)["output"] == "probability"
    assert contract.read_contract(export_dir)["kind"] == "rates"
    holdout = feature_set.holdout
    fresh = export.predict_with_features(export_dir, model_input.feature_inputs(holdout))
    np.testing.assert_allclose(fresh, training.predict_core(result.model, holdout), atol=1e-6)


def test_a_kind_may_bring_its_own_fit(folder):
    feature_dir, _ = folder
    result = training.train_model(
        feature_dir, CONFIG, load_kind(f"{__name__}:OwnFit"), on_epoch_end=lambda epoch, logs: None
    )
    windows = model_input.carve_validation(feature_dir / "train", CONFIG.validation_fraction)
    assert OwnFit.seen == {"train": windows.fit_rows, "validation": windows.validation_rows, "callbacks": 1}
    assert len(result.history["loss"]) == 1 and result.best_epoch == 0


def test_a_network_that_is_not_one_probability_per_row_is_refused(folder):
    feature_dir, _ = folder
    with pytest.raises(
        training.BadNetwork, match=r"one probability per row \[N, 1\], got \[\(None, 1\), \(None, 1\)\]"
    ):
        training.train_model(feature_dir, CONFIG, load_kind(f"{__name__}:TwoOutputs"))


class RefitConfig(KindConfig):
    refit: bool = True


class Refitted(Rates):
    name = "refitted"
    Config = RefitConfig
    built: list = []

    def build(self, context, config):
        model = super().build(context, config)
        self.built.append(model)
        return model


def test_a_kind_asking_for_a_refit_gets_one_more_pass_over_the_validation_window(folder, tmp_path):
    """From the weights early stopping kept, the same network: no second training from scratch."""
    feature_dir, _ = folder
    without_holdout = tmp_path / "features"  # the refit never reads the holdout either
    shutil.copytree(feature_dir, without_holdout)
    shutil.rmtree(without_holdout / "holdout")
    Refitted.built.clear()
    result = training.train_model(without_holdout, CONFIG, load_kind(f"{__name__}:Refitted"))
    assert len(Refitted.built) == 1 and result.model is Refitted.built[0]
    epochs_run = len(result.history["loss"])
    steps = -(-result.train_rows // CONFIG.batch_size) * epochs_run + -(-result.validation_rows // CONFIG.batch_size)
    assert int(result.model.optimizer.iterations.numpy()) == steps


def test_a_warm_start_with_no_rows_to_train_on_is_refused_in_words(folder):
    feature_dir, _ = folder
    nothing = model_input.Warm(since=2**62, replay=0.0, seed=1)
    with pytest.raises(model_input.NoValidationWindow, match="none since the cut-off, none replayed"):
        model_input.write_warm_rows(feature_dir, nothing)


def test_a_folder_built_with_a_warm_starts_rows_alone_is_read_as_it_is(tmp_path):
    """A warm start's feature build writes the rows it reads and says so in meta.json: training
    reads that split as it is; a folder of every row gets the same rows filtered into a split."""
    generate_movielens(tmp_path / "data", users=30, movies=25, days=5, ratings_per_day=120, seed=5)
    dataset = load_dataset(tmp_path / "data")
    whole = features.build_feature_set(dataset, holdout_fraction=0.1)
    rows = model_input.Warm(since=int(whole.train["timestamp"].quantile(0.6)), replay=0.2, seed=1)
    features.write_feature_set(whole, tmp_path / "all")
    kept = features.build_feature_set(dataset, holdout_fraction=0.1, keep=rows.keeps)
    features.write_feature_set(kept, tmp_path / "kept", asdict(rows))

    filtered, as_built = (model_input.warm_rows(tmp_path / name, rows) for name in ("all", "kept"))
    assert (
        as_built.local_path == tmp_path / "kept" / "train" and not (tmp_path / "kept" / model_input.WARM_SPLIT).exists()
    )
    assert filtered.local_path == tmp_path / "all" / model_input.WARM_SPLIT
    assert read_parquet(features.shards(as_built)).equals(read_parquet(features.shards(filtered)))
    other = model_input.Warm(since=rows.since, replay=0.5, seed=1)  # not what the build kept: filtered again
    assert model_input.warm_rows(tmp_path / "kept", other).local_path == tmp_path / "kept" / model_input.WARM_SPLIT
    # What a partitioned build's warm start sizes its replay by: the written split's timestamps, in order.
    assert model_input.split_timestamps(tmp_path / "all" / "train").tolist() == whole.train["timestamp"].to_list()


def test_fresh_wd_serves_fresh_and_frozen_features_and_unknown_ids(folder, tmp_path):
    feature_dir, feature_set = folder
    kind = load_kind("fresh_wd")
    result = training.train_model(feature_dir, CONFIG, kind)
    assert kind.config.refit and result.figures["trainable_params"] < 20_000
    export_dir = export.export_serving_model(
        result.model, feature_set, tmp_path / "export", kind=kind.name, output=kind.output
    )
    holdout = feature_set.holdout
    fresh = export.predict_with_features(export_dir, model_input.feature_inputs(holdout))
    np.testing.assert_allclose(fresh, training.predict_core(result.model, holdout), atol=1e-6)
    unknown = 10**12
    frozen = export.predict_saved_model(export_dir, [unknown, unknown, 1], [1, unknown, unknown])
    assert np.all((frozen > 0) & (frozen < 1))


def test_fresh_wd_starts_as_the_fresh_baseline_so_a_short_fit_cannot_score_worse_than_chance(folder):
    """Before any step the network is the fresh baseline: the user's and the movie's rate logits
    summed (less the prior's), the deep part silent; training learns what it adds to them."""
    feature_dir, feature_set = folder
    untrained, _, _, _ = training.new_model(feature_dir, CONFIG, load_kind("fresh_wd"))
    holdout = feature_set.holdout
    scores = training.predict_core(untrained, holdout).astype(np.float64)
    baseline = evaluation.baseline_scores(holdout, feature_set.priors)[evaluation.FRESH_BASELINE]
    offset = np.log(scores) - np.log1p(-scores) - baseline
    assert np.ptp(offset) < 1e-3


@pytest.mark.parametrize("kind_name", ["fresh_wd", "neural_cf"])
def test_a_warm_start_keeps_the_rows_of_known_ids_and_scores_new_users_and_movies(kind_name, tmp_path):
    """Yesterday's version trained on days 1-5 without some users and movies; today's starts from
    it on day 6 (and a replay of the older days), where those users and movies appear."""
    from infra.tfserving.export import export_for_serving
    from railyard import warm_start

    generate_movielens(tmp_path / "all", users=80, movies=120, days=6, ratings_per_day=500, seed=4)
    everything = load_dataset(tmp_path / "all")
    ratings = everything.ratings
    day_6 = int(ratings.get_column("timestamp").max()) // 86_400 * 86_400
    last_day = ratings.filter(pl.col("timestamp") >= day_6)
    new_users = last_day.get_column("userId").unique().sort().head(4).to_list()
    new_movies = last_day.get_column("movieId").unique().sort().head(4).to_list()
    before = ratings.filter(
        (pl.col("timestamp") < day_6) & ~pl.col("userId").is_in(new_users) & ~pl.col("movieId").is_in(new_movies)
    )
    (tmp_path / "before").mkdir()
    before.write_csv(tmp_path / "before" / "ratings.csv")
    shutil.copy(tmp_path / "all" / "movies.csv", tmp_path / "before" / "movies.csv")
    kind = load_kind(kind_name)

    yesterday = features.build_feature_set(load_dataset(tmp_path / "before"), holdout_fraction=0.1)
    features.write_feature_set(yesterday, tmp_path / "f1")
    base = training.train_model(tmp_path / "f1", CONFIG, kind)
    base_dir = export_for_serving(base, yesterday, tmp_path / "v1", "recmodel", seed=1)
    assert not set(new_users) & set(base.user_ids.tolist())

    today = features.build_feature_set(everything, holdout_fraction=0.1)
    features.write_feature_set(today, tmp_path / "f2")
    previous = warm_start.load_previous(base_dir, 1)
    assert np.array_equal(previous.user_ids, base.user_ids) and np.array_equal(previous.movie_ids, base.movie_ids)
    rows = model_input.Warm(since=yesterday.cutoff_ts, replay=0.2, seed=1)
    warm = training.WarmStart(previous, rows)

    started, windows, context, figures = training.new_model(tmp_path / "f2", CONFIG, kind, warm)
    assert set(new_users) <= set(context.user_ids.tolist()) and set(base.user_ids.tolist()) <= set(
        context.user_ids.tolist()
    )
    assert windows.fit_rows + windows.validation_rows < len(today.train)  # the new rows and a replay, not all
    kept = today.train.filter(
        rows.keeps(*(today.train.get_column(c).to_numpy() for c in ("userId", "movieId", "timestamp")))
    )
    assert read_parquet(features.shards(windows.train_dir)).equals(kept)  # filtered once, in order
    assert windows.fit_rows + windows.validation_rows == kept.height
    assert figures["warm_user_rows_new"] >= len(new_users) and figures["warm_user_rows_carried"] == len(base.user_ids)
    table = "user_embedding/embeddings" if kind_name == "fresh_wd" else "user_gmf/embeddings"
    before_fit = {variable.path: variable.numpy() for variable in base.model.trainable_weights}[table]
    after_carry = {variable.path: variable.numpy() for variable in started.trainable_weights}[table]
    known = 1 + np.searchsorted(context.user_ids, base.user_ids)
    assert np.array_equal(after_carry[known], before_fit[1:]) and np.array_equal(after_carry[0], before_fit[0])

    result = training.train_model(tmp_path / "f2", CONFIG, kind, warm=warm)
    served = export_for_serving(result, today, tmp_path / "v2", "recmodel", seed=1)
    new_pairs = today.holdout.filter(pl.col("userId").is_in(new_users) | pl.col("movieId").is_in(new_movies))
    assert new_pairs.height
    scores = export.predict_saved_model(served, new_pairs.get_column("userId"), new_pairs.get_column("movieId"))
    assert np.isfinite(scores).all() and ((scores > 0) & (scores < 1)).all()
    assert (
        evaluation.evaluate_saved_model(served, evaluation.Holdout.of(today.holdout, today.priors)).metrics["auc"] > 0.5
    )
