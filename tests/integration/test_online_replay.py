"""Train/serve consistency, end to end: the holdout's events replayed in time order through the
online path (a real Valkey, the local TF-Serving stand-in over gRPC) read exactly the offline
point-in-time features and get the offline model's scores.

For each timestamp, that timestamp's rows are scored first (what the store held just before
them), then their events are applied, as production sees a rating arrive after its request.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from infra.online_store.store import OnlineStore
from infra.scoring import score_online
from infra.tfserving.client import ServingClient
from infra.tfserving.model_config import render_model_config
from railyard import export, features, model_input, training
from railyard import feature_spec as spec
from railyard.events import RatingEvent
from railyard.kinds.registry import load_kind
from railyard.loaders import load_dataset
from railyard.settings import Settings
from railyard.synthetic import generate_movielens
from tests.support.online_store import THROWAWAY

pytest_plugins = ["tests.support.serving_fixtures"]
MODEL = "recmodel"


@pytest.fixture(scope="module", params=["declared", "with a throwaway aggregate declared"])
def declarations(request):
    """The declared aggregates, and once more with one added in the one place they are declared."""
    with pytest.MonkeyPatch.context() as patch:
        if request.param != "declared":
            patch.setattr(spec, "MOVIE_AGGREGATES", (*spec.MOVIE_AGGREGATES, THROWAWAY))
        yield request.param


@pytest.fixture(scope="module")
def exported(declarations, tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    generate_movielens(root / "data", users=60, movies=120, days=6, ratings_per_day=300, seed=21)
    dataset = load_dataset(root / "data")
    feature_set = features.build_feature_set(dataset, holdout_fraction=0.2)
    features.write_feature_set(feature_set, root / "features")
    config = Settings(epochs=1, batch_size=256, seed=1).train_config()
    trained = training.train_model(root / "features", config, load_kind("neural_cf", embedding_dim=8))
    export.export_serving_model(
        trained.model, feature_set, root / "models" / MODEL / "1", kind="neural_cf", output="score"
    )
    return dataset, feature_set, root / "models"


def test_the_replayed_holdout_reads_the_offline_features_and_scores_as_offline(exported, online_store, start_server):
    """Every declared aggregate: today's sums, the latest rating and its time, and a new one."""
    dataset, feature_set, model_root = exported
    server = start_server(render_model_config(MODEL, model_root / MODEL, {1}, {}))
    client = ServingClient(server.grpc_target, server.rest_url)
    online_store = OnlineStore(online_store.client)  # its scripts from the declarations as they are now
    online_store.rebuild(dataset.ratings.filter(pl.col("timestamp") < feature_set.cutoff_ts), dataset.movies)

    holdout = feature_set.holdout  # in time order
    read_users, read_movies, online_scores = [], [], []
    for _, rows in holdout.group_by("timestamp", maintain_order=True):
        users, movies = rows.get_column("userId").to_list(), rows.get_column("movieId").to_list()
        user_features, movie_features = online_store.read_pairs(users, movies)
        read_users.append(user_features)
        read_movies.append(movie_features)
        online_scores.append(score_online(online_store, client, MODEL, users, movies, version=1))
        applied = online_store.apply(
            [RatingEvent(u, m, r, t) for u, m, r, t in rows.select("userId", "movieId", "rating", "timestamp").rows()]
        )
        assert applied.new == len(rows) and not applied.conflicts
    client.close()

    assert holdout.get_column("timestamp").n_unique() > 100  # many steps, not one batch
    for name in ("user_last_rating", "user_last_ts", *([THROWAWAY.name] if THROWAWAY in spec.MOVIE_AGGREGATES else [])):
        assert holdout.get_column(name).n_unique() > 10, name  # each one varies: compared below, it counts
    # Exactly the offline features (float32 holds these counts and half-star sums exactly).
    np.testing.assert_array_equal(
        np.vstack(read_users), model_input.feature_inputs(holdout)["user_features"].astype(np.float64)
    )
    np.testing.assert_array_equal(
        np.vstack(read_movies), model_input.feature_inputs(holdout)["movie_features"].astype(np.float64)
    )
    offline = export.predict_with_features(model_root / MODEL / "1", model_input.feature_inputs(holdout))
    np.testing.assert_allclose(np.concatenate(online_scores), offline, atol=1e-5, rtol=0)
    # Fresh features matter here: the ids-only signature (frozen at the cut-off) scores otherwise.
    frozen = export.predict_saved_model(model_root / MODEL / "1", holdout["userId"], holdout["movieId"])
    assert np.abs(frozen - offline).max() > 0.01
