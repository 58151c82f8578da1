"""Training neural_cf and the SavedModel export: both signatures, parity with Keras, priors frozen
in, cold start, golden requests, the version's contract."""

import json

import numpy as np
import polars as pl
import pytest

from railyard import contract, export, features, model_input, training
from railyard.kinds.neural_cf import row_sparse_adam
from railyard.kinds.registry import load_kind
from railyard.loaders import load_dataset
from railyard.settings import Settings
from railyard.synthetic import generate_movielens


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    generate_movielens(root / "data", users=120, movies=200, days=6, ratings_per_day=600, seed=3)
    feature_set = features.build_feature_set(load_dataset(root / "data"), holdout_fraction=0.2)
    features.write_feature_set(feature_set, root / "features")
    config = Settings(epochs=2, batch_size=256, seed=1).train_config()
    result = training.train_model(root / "features", config, load_kind("neural_cf", embedding_dim=8))
    export_dir = export.export_serving_model(
        result.model, feature_set, root / "export", kind="neural_cf", output="score"
    )
    return feature_set, result, export_dir


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        (contract.SIGNATURE_NAME, {}),
        (contract.FEATURES_SIGNATURE, {"user_features": features.USER_WIDTH, "movie_features": features.MOVIE_WIDTH}),
    ],
)
def test_signatures_take_their_inputs_and_return_one_score(trained, name, extra):
    import tensorflow as tf

    _, _, export_dir = trained
    signature = export.load_signature(export_dir, name)
    _, inputs = signature.structured_input_signature
    expected = {"userId": (tf.int64, [None]), "movieId": (tf.int64, [None])}
    expected |= {input_name: (tf.float32, [None, width]) for input_name, width in extra.items()}
    assert {key: (spec.dtype, spec.shape.as_list()) for key, spec in inputs.items()} == expected
    assert set(contract.SIGNATURES[name]) == set(expected)
    outputs = signature.structured_outputs
    assert list(outputs) == ["score"]
    assert outputs["score"].dtype == tf.float32 and outputs["score"].shape.as_list() == [None, 1]
    served = contract.read_contract(export_dir)  # the version says what it serves
    assert served["kind"] == "neural_cf" and served["signatures"][name] == {
        "inputs": contract.SIGNATURES[name],
        "output": "score",
    }


def test_both_signatures_reproduce_keras_predictions(trained):
    feature_set, result, export_dir = trained
    holdout = feature_set.holdout
    fresh = export.predict_with_features(export_dir, model_input.feature_inputs(holdout))
    np.testing.assert_allclose(fresh, training.predict_core(result.model, holdout), atol=1e-5)
    # The ids-only signature is the core model fed the training snapshot (zeros for unknown ids).
    frozen_rows = holdout.select("userId", "movieId").join(
        feature_set.user_snapshot, on="userId", how="left", maintain_order="left"
    )
    frozen_rows = frozen_rows.join(feature_set.movie_snapshot, on="movieId", how="left", maintain_order="left")
    zeros = pl.lit([0.0] * len(features.GENRES), pl.Array(pl.Float32, len(features.GENRES)))
    unknown = frozen_rows["user_n"].is_null().sum()
    assert 0 < unknown < len(holdout)  # both kinds are covered
    frozen_rows = frozen_rows.with_columns(
        pl.col(name).fill_null(zeros if isinstance(dtype, pl.Array) else 0.0)
        for name, dtype in frozen_rows.schema.items()
        if name not in ("userId", "movieId")
    )
    served = export.predict_saved_model(export_dir, frozen_rows["userId"], frozen_rows["movieId"])
    np.testing.assert_allclose(served, training.predict_core(result.model, frozen_rows), atol=1e-5)


def test_priors_are_frozen_in_the_model(trained, tmp_path):
    """The priors are constants of the model version (its transformation's config), taken from
    the training rows when the model was built, never read at serving time."""
    feature_set, result, export_dir = trained
    (layer,) = [layer for layer in result.model.layers if layer.name == "aggregate_transform"]
    assert layer.get_config()["prior_pos"] == pytest.approx(feature_set.priors["pos"])
    assert layer.get_config()["prior_mean"] == pytest.approx(feature_set.priors["mean"])


def test_unseen_ids_get_a_score_not_an_error(trained):
    feature_set, _, export_dir = trained
    unseen = int(feature_set.user_snapshot["userId"].max()) + 10_000
    movies = feature_set.movie_snapshot["movieId"].head(5).to_numpy()
    scores = export.predict_saved_model(export_dir, [unseen] * 5 + [1], list(movies) + [10**9])
    assert np.all(np.isfinite(scores)) and np.all((scores > 0) & (scores < 1))
    # A cold user still gets movie-dependent scores: the movie's features and embedding count.
    assert np.ptp(scores[:5]) > 0


def test_golden_requests_hold_the_offline_predictions(trained):
    feature_set, _, export_dir = trained
    instances = export.golden_instances(feature_set, count=5)
    golden = export.write_golden_requests(export_dir, feature_set, instances)
    stored = json.loads((export_dir / contract.GOLDEN_FILE).read_text())
    assert stored == golden and set(stored) == {contract.SIGNATURE_NAME, contract.FEATURES_SIGNATURE}
    ids_only, with_features = stored[contract.SIGNATURE_NAME], stored[contract.FEATURES_SIGNATURE]
    assert len(ids_only["instances"]) == len(with_features["instances"]) == 8  # 5 holdout + 3 cold-start pairs
    expected = export.predict_saved_model(
        export_dir, [i["userId"] for i in instances], [i["movieId"] for i in instances]
    )
    np.testing.assert_allclose([p[0] for p in ids_only["predictions"]], expected, atol=1e-6)
    # The features requests carry each holdout pair's fresh aggregates; unknown ids all zeros.
    first = with_features["instances"][0]
    row = feature_set.holdout.filter(
        (feature_set.holdout["userId"] == first["userId"]) & (feature_set.holdout["movieId"] == first["movieId"])
    ).head(1)
    np.testing.assert_array_equal(first["user_features"], model_input.feature_inputs(row)["user_features"][0])
    assert with_features["instances"][-1]["user_features"] == [0.0] * features.USER_WIDTH
    fresh = export.predict_with_features(export_dir, model_input.feature_inputs(row))
    assert with_features["predictions"][0][0] == pytest.approx(float(fresh[0]), abs=1e-6)


def test_training_history_has_validation_auc_per_epoch(trained):
    _, result, _ = trained
    assert len(result.history["val_auc"]) == len(result.history["loss"]) >= 1
    assert 0 <= result.best_epoch < len(result.history["loss"])
    assert result.figures["trainable_params"] > 0


def test_row_sparse_adam_updates_only_the_rows_a_batch_used():
    import keras
    import tensorflow as tf

    start = np.arange(12, dtype=np.float32).reshape(6, 2) / 10
    sparse_table, dense_table = keras.Variable(start), keras.Variable(start)
    sparse, dense = row_sparse_adam()(0.1), keras.optimizers.Adam(0.1)
    # Row 1 looked up twice: its two gradients are summed, as a dense gradient would hold them.
    first = tf.IndexedSlices(
        tf.constant([[1.0, -2.0], [0.5, 0.5], [3.0, 1.0]]), tf.constant([1, 4, 1]), tf.constant([6, 2])
    )
    sparse.apply([first], [sparse_table])
    dense.apply([tf.convert_to_tensor(first)], [dense_table])
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), rtol=1e-6)  # same first step
    assert not np.allclose(sparse_table.numpy()[[1, 4]], start[[1, 4]])

    after_first = sparse_table.numpy()
    second = tf.IndexedSlices(tf.constant([[1.0, 1.0]]), tf.constant([2]), tf.constant([6, 2]))
    sparse.apply([second], [sparse_table])
    dense.apply([tf.convert_to_tensor(second)], [dense_table])
    untouched = [0, 1, 3, 4, 5]
    np.testing.assert_array_equal(sparse_table.numpy()[untouched], after_first[untouched])
    # Keras' Adam keeps moving rows 1 and 4 on their momentum, and pays for every row to do so.
    assert not np.allclose(dense_table.numpy()[[1, 4]], after_first[[1, 4]])


def test_streaming_training_data_leaves_large_blocks_on_the_heap(tmp_path):
    """TensorFlow's generator datasets freeze glibc's mmap threshold (at 128 KiB in a fresh
    process); make_dataset raises it, so a training step's larger tensors come from the heap and
    reuse freed memory instead of being mapped and faulted in anew every step."""
    import ctypes

    class MallInfo2(ctypes.Structure):  # glibc >= 2.33, mallinfo2(3)
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    generate_movielens(tmp_path / "data", users=30, movies=40, days=3, ratings_per_day=200, seed=5)
    features.write_feature_set(features.build_feature_set(load_dataset(tmp_path / "data"), 0.2), tmp_path / "f")
    for _ in model_input.make_dataset(tmp_path / "f" / "train", 64, shuffle_seed=1):
        pass

    mapped_before = mallinfo2().hblkhd
    block = np.ones(4 << 20, dtype=np.uint8)  # noqa: F841 - held while measuring
    assert mallinfo2().hblkhd - mapped_before < 4 << 20  # on the heap, not a mapping of its own
