"""Scoring (userId, movieId) pairs the online way: fresh aggregates from the online store (one
round trip), then one gRPC predict call with the model's ``features`` signature; with no
features (the store down or empty), the ids-only ``serving_default`` signature (degraded).

Who uses what: ``score_online`` (a store read, then ``predict_pairs``) is ``railyard score``'s
path, and the reference the replay, ranking and streaming tests compare with; the streaming
scorer (``infra.streaming``) takes ``fresh_features`` and ``predict_routed``; the ranking
service (``infra.ranking``) takes ``predict_routed`` only, and reads the store itself (its
features with its own degraded fallback, timed and counted in its metrics; a recommendation's
candidates and their features in one read). ``predict_routed`` is how both services ask a routed
label, with the canary's fallback to stable. The smoke tests do not come here: they send the
golden requests through the serving client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from infra.online_store.store import OnlineStore, OnlineStoreEmpty, OnlineStoreUnavailable
from infra.tfserving.client import ServingClient, ServingError
from infra.tfserving.protocol import CANARY, STABLE
from railyard import contract

Features = tuple[np.ndarray, np.ndarray]  # users [n, USER_WIDTH], movies [n, MOVIE_WIDTH]


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
    features = store.read_pairs(user_ids, movie_ids)
    return predict_pairs(client, model, user_ids, movie_ids, features, label=label, version=version)[0]


def fresh_features(store: OnlineStore, user_ids: Sequence[int], movie_ids: Sequence[int]) -> Features | None:
    """The pairs' fresh features, or None when the store does not answer or holds none (score
    them ids only: degraded)."""
    try:
        return store.read_pairs(user_ids, movie_ids)
    except (OnlineStoreUnavailable, OnlineStoreEmpty):
        return None


def predict_pairs(
    client: ServingClient,
    model: str,
    user_ids: Sequence[int],
    movie_ids: Sequence[int],
    features: Features | None,
    *,
    label: str | None = None,
    version: int | None = None,
) -> tuple[np.ndarray, int | None]:
    """One gRPC predict: one score per pair, and the version that answered (TF Serving's
    response says). With ``features``, the ``features`` signature; without, ids only."""
    columns = contract.feature_columns(user_ids, movie_ids, *(features or ()))
    signature = contract.FEATURES_SIGNATURE if features is not None else contract.SIGNATURE_NAME
    outputs, answered = client.predict_grpc_versioned(
        model, columns, label=label, version=version, signature_name=signature
    )
    return contract.scores_of(outputs), answered


def predict_routed(
    client: ServingClient,
    model: str,
    routed: str,
    user_ids: Sequence[int],
    movie_ids: Sequence[int],
    features: Features | None,
    *,
    observe: Callable[[str, str, bool, float], None],
    failed: Callable[[str, ServingError], None],
) -> tuple[np.ndarray, str, int | None]:
    """``predict_pairs`` on the ``routed`` label (``client``: a ServingClient, or anything with its
    ``predict_grpc_versioned``, as a pool of replicas): the scores, the label and the version that
    answered. A canary call that fails is answered by stable. ``observe`` sees each call's label,
    signature, success and seconds; ``failed`` each failed call's label and error, before stable
    takes the canary's place or the error is raised."""
    signature = contract.FEATURES_SIGNATURE if features is not None else contract.SIGNATURE_NAME
    for label in (CANARY, STABLE) if routed == CANARY else (STABLE,):
        started = time.perf_counter()
        try:
            scores, version = predict_pairs(client, model, user_ids, movie_ids, features, label=label)
        except ServingError as error:
            observe(label, signature, False, time.perf_counter() - started)
            failed(label, error)
            if label == CANARY:
                continue
            raise
        observe(label, signature, True, time.perf_counter() - started)
        return scores, label, version
    raise AssertionError("unreachable: stable either answers or raises")
