"""Scoring (userId, movieId) pairs the online way: fresh aggregates from the online store (one
round trip), then one gRPC predict call with the model's ``features`` signature.

This is the path a ranking service takes in front of TF Serving; the smoke tests, the replay
check and ``railyard score`` use it as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from infra.online_store.store import OnlineStore
from infra.tfserving.client import ServingClient
from railyard import contract


def score_online(
    store: OnlineStore,
    client: ServingClient,
    model: str,
    user_ids: Sequence[int],
    movie_ids: Sequence[int],
    *,
    label: str | None = None,
    version: int | None = None,
) -> np.ndarray:
    """One score per pair from the served ``label`` (or ``version``). Raises the online store's
    error when it does not answer, and the serving client's when serving does not."""
    users, movies = store.read_pairs(user_ids, movie_ids)
    columns = contract.feature_columns(user_ids, movie_ids, users, movies)
    answer = client.predict_grpc(
        model, columns, label=label, version=version, signature_name=contract.FEATURES_SIGNATURE
    )
    return contract.scores_of(answer)
