"""The ranking service (``infra.ranking``, ``railyard rank-server``) against a real Valkey and the
local TF-Serving stand-in serving the tiny models (version 1 `stable`, version 2 `canary`):
candidates, fresh scores, routing by user, the share reaching another instance, live figures,
metrics, and what it answers when the online store or TF Serving is down."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from infra.online_store import gray_state, keys, valkey_process
from infra.online_store.store import connect
from infra.ranking import create_app
from infra.scoring import score_online
from railyard.contract import CANARY, STABLE
from railyard.gray_rules import label_for, user_bucket
from railyard.settings import Settings, load_settings
from tests.support.browser import computed, screenshot, wait_for_text
from tests.support.online_store import as_events, movies_frame, railyard, ratings_frame
from tests.support.serving_fixtures import MODEL_NAME, CanaryFails, client_for, model_config

pytest_plugins = ["tests.support.serving_fixtures"]
pytestmark = pytest.mark.timeout(120)

USER = 6


@pytest.fixture(scope="module")
def serving(contract_server):
    """A client of the module's server: version 1 is `stable`, version 2 `canary`."""
    with client_for(contract_server, attempts=1, timeout_s=5) as client:
        yield client


@pytest.fixture
def batch():
    """100 ratings by 25 users of 45 movies; a catalogue of 40 (movies 41-45 are rated, unlisted).
    Small aggregates: the tiny models' scores stay apart (large ones saturate their sigmoid at 1)."""
    return ratings_frame(100, users=25, movies=45, seed=11), movies_frame(40)


@pytest.fixture
def store(online_store, batch):
    online_store.rebuild(*batch)
    return online_store


def make_app(store, serving, **options):
    return make_app_over([serving], store, **options)


def make_app_over(replicas, store, **options):
    return TestClient(create_app(store, replicas, MODEL_NAME, **options))


def metric_samples(client: TestClient) -> dict[tuple, float]:
    """``/metrics`` parsed: (sample name, sorted labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def rated_by(ratings: pl.DataFrame, user: int) -> set[int]:
    return set(ratings.filter(pl.col("userId") == user).get_column("movieId").to_list())


def counts_of(ratings: pl.DataFrame) -> dict[int, int]:
    return dict(ratings.group_by("movieId").len().iter_rows())


def test_recommend_excludes_rated_movies_and_ranks_the_popular_rest_by_fresh_score(store, serving, batch):
    ratings, _ = batch
    rated, counts = rated_by(ratings, USER), counts_of(ratings)
    unrated = sorted(set(counts) - rated)
    with make_app(store, serving) as client:
        answer = client.get("/v1/recommend", params={"userId": USER, "k": 10}).json()
        assert answer["userId"] == USER and answer["label"] == STABLE and answer["model_version"] == 1
        assert answer["degraded"] is False and len(answer["recommendations"]) == 10
        movies = [item["movieId"] for item in answer["recommendations"]]
        scores = [item["score"] for item in answer["recommendations"]]
        assert not set(movies) & rated
        assert scores == sorted(scores, reverse=True) and len(set(scores)) >= 8  # a real order, not ties
        # Every unrated movie is a candidate (100 > 45): the answer is their top 10 by fresh score.
        expected = score_online(store, serving, MODEL_NAME, [USER] * len(unrated), unrated, label=STABLE)
        best = sorted(zip(unrated, expected.tolist()), key=lambda pair: (-pair[1], pair[0]))[:10]
        assert movies == [movie for movie, _ in best]
        np.testing.assert_allclose(scores, [score for _, score in best], rtol=1e-6)

        # Five candidates: the five most rated of the movies the user has not rated.
        few = client.get("/v1/recommend", params={"userId": USER, "k": 10, "candidates": 5}).json()
        chosen = [item["movieId"] for item in few["recommendations"]]
        assert len(chosen) == 5 and not set(chosen) & rated
        assert min(counts[m] for m in chosen) >= max(counts[m] for m in unrated if m not in chosen)

        # A new rating reaches the candidates: the top movie is rated now, so it is gone.
        top = movies[0]
        assert (
            store.apply(
                as_events(pl.DataFrame([(USER, top, 4.0, 1_790_000_000)], schema=ratings.schema, orient="row"))
            ).new
            == 1
        )
        again = client.get("/v1/recommend", params={"userId": USER, "k": 10}).json()
        assert top not in [item["movieId"] for item in again["recommendations"]]

        # Bad input is a JSON 422, not a crash.
        assert client.get("/v1/recommend", params={"userId": USER, "k": 0}).status_code == 422


def test_the_candidate_data_matches_the_ratings_after_rebuild_and_apply(online_store, batch):
    """Rebuild from half the ratings, apply the rest (some twice): each user's rated movies and
    each movie's ratings count are those of all the ratings, counted once."""
    ratings, movies = batch
    online_store.rebuild(ratings.head(50), movies)
    online_store.apply(as_events(ratings.tail(50)))
    online_store.apply(as_events(ratings.slice(30, 40)))  # half of them known already
    namespace = online_store.namespace()
    client = online_store.client
    popularity = {int(m): int(n) for m, n in client.zrange(keys.popularity_key(namespace), 0, -1, withscores=True)}
    assert popularity == counts_of(ratings)
    for user in range(1, 26):
        assert {int(m) for m in client.smembers(keys.rated_key(namespace, user))} == rated_by(ratings, user)


def test_recommend_from_an_empty_store_or_one_without_candidate_data(online_store, serving):
    """A fresh store has nothing to propose yet (an empty list); a namespace built before the store
    kept candidate data (no ``candidates`` flag in its meta) is a JSON 503 asking for a rebuild."""
    online_store.rebuild(pl.DataFrame(schema=ratings_frame(1, users=1, movies=1, seed=1).schema), None)
    with make_app(online_store, serving) as client:
        empty = client.get("/v1/recommend", params={"userId": USER})
        assert empty.status_code == 200 and empty.json()["recommendations"] == []
        online_store.client.hdel(keys.meta_key(online_store.namespace()), "candidates")
        old = client.get("/v1/recommend", params={"userId": USER})
        assert old.status_code == 503 and old.json()["error"] == "no_candidates"
        assert "rebuild" in old.json()["detail"]


def test_score_with_fresh_features_equals_score_online_and_routes_each_user(store, serving):
    users = [1, 4, 6, 9, 12, 20, 25, 10_000]
    movies = [1, 30, 7, 3, 45, 12, 2, 5]
    instances = [{"userId": u, "movieId": m} for u, m in zip(users, movies)]
    with make_app(store, serving, share_ttl_s=0) as client:
        answer = client.post("/v1/score", json={"instances": instances}).json()
        assert answer["label"] == STABLE and answer["model_version"] == 1 and answer["degraded"] is False
        expected = score_online(store, serving, MODEL_NAME, users, movies, label=STABLE)
        np.testing.assert_allclose([p for (p,) in answer["predictions"]], expected, rtol=1e-6)

        gray_state.set_canary_share(store.client, MODEL_NAME, 1.0)
        everyone = client.post("/v1/score", json={"instances": instances}).json()
        assert everyone["label"] == CANARY and everyone["model_version"] == 2
        expected = score_online(store, serving, MODEL_NAME, users, movies, label=CANARY)
        np.testing.assert_allclose([p for (p,) in everyone["predictions"]], expected, rtol=1e-6)

        # Half the users: each instance is scored by its user's label, one call per label.
        gray_state.set_canary_share(store.client, MODEL_NAME, 0.5)
        mixed = client.post("/v1/score", json={"instances": instances}).json()
        routes = {route["label"]: route for route in mixed["routes"]}
        assert mixed["label"] == "mixed" and set(routes) == {STABLE, CANARY}, [user_bucket(u) for u in users]
        for label, route in routes.items():
            rows = route["instances"]
            assert all(label_for(users[row], 0.5) == label for row in rows)
            assert route["model_version"] == (1 if label == STABLE else 2)
            expected = score_online(
                store, serving, MODEL_NAME, [users[r] for r in rows], [movies[r] for r in rows], label=label
            )
            np.testing.assert_allclose([mixed["predictions"][r][0] for r in rows], expected, rtol=1e-6)

        assert client.post("/v1/score", json={"instances": []}).status_code == 422
        assert client.post("/v1/score", json={"instances": [{"userId": 1}]}).status_code == 422


def test_score_takes_a_json_body_whatever_its_declared_type_as_tf_serving_does(store, serving):
    body = json.dumps({"instances": [{"userId": USER, "movieId": 1}, {"userId": 2, "movieId": 3}]})
    with make_app(store, serving) as client:
        typed = client.post("/v1/score", content=body, headers={"Content-Type": "application/json"})
        assert typed.status_code == 200, typed.text
        # `curl -d` declares a form; others declare text or nothing at all.
        for declared in ("application/x-www-form-urlencoded", "text/plain", None):
            answer = client.post("/v1/score", content=body, headers={"Content-Type": declared} if declared else {})
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == typed.json()["predictions"]


def test_a_refused_request_is_a_short_json_422_that_never_echoes_the_input(store, serving):
    marker = 987_654_321  # a movieId the answers must not repeat
    bodies = {
        "too many": json.dumps({"instances": [{"userId": USER, "movieId": marker}] * 100_000}),
        "a bad instance": json.dumps({"instances": [{"userId": f"{marker}x", "movieId": marker}]}),
        "not JSON": f"userId={USER}&movieId={marker}",
    }
    with make_app(store, serving) as client:
        for case, body in bodies.items():
            refused = client.post("/v1/score", content=body, headers={"Content-Type": "text/plain"})
            assert refused.status_code == 422, case
            assert refused.json()["error"] == "invalid_request", case
            assert str(marker) not in refused.text and len(refused.text) < 1_000, (case, refused.text[:300])
        refused = client.get("/v1/recommend", params={"userId": f"{marker}x"})
        assert refused.status_code == 422 and str(marker) not in refused.text


@pytest.mark.parametrize("bad", [-6, 0, 2**64])
def test_railyard_score_refuses_the_ids_the_ranking_service_refuses(bad, store, serving):
    with make_app(store, serving) as client:
        for instance in ({"userId": bad, "movieId": 1}, {"userId": USER, "movieId": bad}):
            assert client.post("/v1/score", json={"instances": [instance]}).status_code == 422, instance
        assert client.get("/v1/recommend", params={"userId": bad}).status_code == 422
    for args, name in ((["--", str(bad), "1"], "userId"), (["--", str(USER), "1", str(bad)], "movieId")):
        refused = railyard("score", *args)
        assert refused.returncode == 2, refused.stderr
        error, next_step = refused.stderr.strip().splitlines()
        assert error.startswith(f"error: {name} {bad} ") and next_step.startswith("next: "), refused.stderr


@pytest.mark.parametrize("share", [0.05, 0.1, 0.25, 0.5, 0.9])
def test_the_split_gives_the_canary_its_share_of_users(share):
    canary = sum(label_for(user, share) == CANARY for user in range(1, 10_001)) / 10_000
    assert abs(canary - share) <= 0.02


def test_one_user_gets_one_label_on_every_request_of_every_instance(store, serving):
    gray_state.set_canary_share(store.client, MODEL_NAME, 0.5)
    users = range(1, 41)
    with make_app(store, serving) as first, make_app(connect(load_settings()), serving) as second:
        for user in users:
            labels = {
                client.post("/v1/score", json={"instances": [{"userId": user, "movieId": 1}]}).json()["label"]
                for client in (first, second)
                for _ in range(3)
            }
            assert labels == {label_for(user, 0.5)}


def test_a_share_change_reaches_another_instance_within_a_second(store, serving):
    """Two instances with their own caches (as two replicas): one's share change in the store is
    followed by the other within its 0.5 s refresh."""
    user = next(u for u in range(1, 1_000) if user_bucket(u) < 0.3)
    request = {"instances": [{"userId": user, "movieId": 1}]}
    other_store = connect(load_settings())  # its own connection pool
    with make_app(store, serving) as first, make_app(other_store, serving) as second:
        assert second.post("/v1/score", json=request).json()["label"] == STABLE  # share 0, cached
        changed = time.monotonic()
        gray_state.set_canary_share(first.app.state.ranker.store.client, MODEL_NAME, 0.3)
        while second.post("/v1/score", json=request).json()["label"] != CANARY:
            assert time.monotonic() - changed < 1.0, "the share change did not arrive within a second"
            time.sleep(0.02)
        gray_state.set_canary_share(store.client, MODEL_NAME, 0.0)
        changed = time.monotonic()
        while second.post("/v1/score", json=request).json()["label"] != STABLE:
            assert time.monotonic() - changed < 1.0, "the share change did not arrive within a second"
            time.sleep(0.02)
    other_store.client.close()


def test_live_figures_are_recorded_per_label_and_metrics_are_exposed(store, serving):
    gray_state.set_canary_share(store.client, MODEL_NAME, 0.5)
    on_canary = [u for u in range(1, 200) if label_for(u, 0.5) == CANARY][:6]
    on_stable = [u for u in range(1, 200) if label_for(u, 0.5) == STABLE][:4]
    scores = {STABLE: [], CANARY: []}
    with make_app(store, serving, live_flush_s=600) as client:
        for user in on_canary + on_stable:
            answer = client.get("/v1/recommend", params={"userId": user, "k": 5}).json()
            scores[answer["label"]].append(np.mean([item["score"] for item in answer["recommendations"]]))
        assert client.app.state.ranker.live.flush()  # what its thread does every live_flush_s
        samples = metric_samples(client)

    canary = gray_state.live(store.client, MODEL_NAME, CANARY, 2)
    stable = gray_state.live(store.client, MODEL_NAME, STABLE, 1)
    assert (canary.requests, canary.errors, stable.requests, stable.errors) == (6, 0, 4, 0)
    assert canary.mean_score == pytest.approx(np.mean(scores[CANARY]))
    assert stable.mean_score == pytest.approx(np.mean(scores[STABLE]))
    assert canary.p99_ms is not None

    def sample(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert sample("railyard_ranking_requests_total", endpoint="recommend", label=CANARY, status="200") == 6
    assert sample("railyard_ranking_requests_total", endpoint="recommend", label=STABLE, status="200") == 4
    assert sample("railyard_ranking_request_seconds_count", endpoint="recommend", label=CANARY) == 6
    assert sample("railyard_ranking_tfserving_seconds_count", label=STABLE, signature="features", outcome="ok") == 4
    assert sample("railyard_ranking_online_store_seconds_count", operation="candidates", outcome="ok") == 10
    # Ten requests' figures, written together: one store transaction, not ten writes.
    assert sample("railyard_ranking_online_store_seconds_count", operation="record", outcome="ok") == 1
    assert sample("railyard_ranking_canary_share") == 0.5
    assert not any(name == "railyard_ranking_errors_total" for name, _ in samples)  # no error yet


def test_a_failing_canary_is_counted_against_it_and_stable_answers(store, serving):
    gray_state.set_canary_share(store.client, MODEL_NAME, 1.0)
    with make_app(store, CanaryFails(serving), share_ttl_s=0) as client:
        answer = client.get("/v1/recommend", params={"userId": USER, "k": 3}).json()
        assert answer["label"] == STABLE and answer["model_version"] == 1 and len(answer["recommendations"]) == 3
        scored = client.post("/v1/score", json={"instances": [{"userId": USER, "movieId": 1}]}).json()
        assert scored["label"] == STABLE and scored["model_version"] == 1
        # Users of both labels: the canary's users fall back to stable, one answer from stable.
        gray_state.set_canary_share(store.client, MODEL_NAME, 0.5)
        users = [next(u for u in range(1, 100) if label_for(u, 0.5) == label) for label in (CANARY, STABLE)]
        both = client.post("/v1/score", json={"instances": [{"userId": u, "movieId": 1} for u in users]}).json()
        assert both["label"] == STABLE and both["routes"] == [
            {"label": STABLE, "model_version": 1, "instances": [0, 1]}
        ]
        samples = metric_samples(client)
    canary = gray_state.live(store.client, MODEL_NAME, CANARY, 2)
    stable = gray_state.live(store.client, MODEL_NAME, STABLE, 1)
    assert (canary.requests, canary.errors, stable.requests, stable.errors) == (3, 3, 4, 0)
    assert samples[("railyard_ranking_errors_total", (("kind", "canary_fallback"),))] == 3


def test_without_a_canary_label_everyone_gets_stable_and_serving_down_is_a_json_503(
    online_store, batch, model_root, start_server
):
    online_store.rebuild(*batch)
    gray_state.set_canary_share(online_store.client, MODEL_NAME, 1.0)  # a share left over: no canary served
    own = start_server(model_config(model_root, {1}, {STABLE: 1}))
    request = {"instances": [{"userId": USER, "movieId": 1}, {"userId": 2, "movieId": 3}]}
    with client_for(own, attempts=1, timeout_s=2) as serving, make_app(online_store, serving) as client:
        answer = client.post("/v1/score", json=request).json()
        assert answer["label"] == STABLE and answer["model_version"] == 1
        assert client.get("/readyz").json() == {"ready": True, "not_ready": {}, "replicas_down": []}

        own.stop()
        for response in (
            client.post("/v1/score", json=request),
            client.get("/v1/recommend", params={"userId": USER}),
        ):
            assert response.status_code == 503
            assert response.json()["error"] == "serving_unavailable"
            assert "Traceback" not in response.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and set(ready.json()["not_ready"]) == {"serving"}
        assert client.get("/healthz").status_code == 200
        samples = metric_samples(client)
    assert (
        samples[("railyard_ranking_requests_total", (("endpoint", "score"), ("label", "none"), ("status", "503")))] == 1
    )
    assert samples[("railyard_ranking_errors_total", (("kind", "tfserving_unavailable"),))] == 2
    stable = gray_state.live(online_store.client, MODEL_NAME, STABLE, 1)
    assert (stable.requests, stable.errors) == (3, 2)


def test_with_the_online_store_down_scores_are_degraded_and_candidates_a_json_503(
    tmp_path, railyard_home, batch, serving
):
    settings = Settings(home=tmp_path / "own", local_online_store_port=0)
    valkey_process.ensure_valkey(settings)
    try:
        store = connect(settings)
        store.rebuild(*batch)
        gray_state.set_canary_share(store.client, MODEL_NAME, 1.0)
        request = {"instances": [{"userId": USER, "movieId": 1}, {"userId": 20, "movieId": 7}]}
        with make_app(store, serving, share_ttl_s=0.1) as client:
            assert client.get("/readyz").status_code == 200
            assert client.post("/v1/score", json=request).json()["degraded"] is False

            valkey_process.stop(settings)
            time.sleep(0.2)  # past the share's refresh: the last share read stays in force
            ready = client.get("/readyz")
            assert ready.status_code == 503 and set(ready.json()["not_ready"]) == {"online_store"}
            answer = client.post("/v1/score", json=request).json()
            assert answer["degraded"] is True and answer["label"] == CANARY and answer["model_version"] == 2
            ids_only = serving.predict_grpc(MODEL_NAME, request["instances"], label=CANARY)["score"]
            np.testing.assert_allclose(answer["predictions"], ids_only, rtol=1e-6)

            response = client.get("/v1/recommend", params={"userId": USER})
            assert response.status_code == 503 and response.json()["error"] == "online_store_unavailable"
            samples = metric_samples(client)
        assert samples[("railyard_ranking_degraded_answers_total", (("endpoint", "score"),))] == 1
        assert samples[("railyard_ranking_errors_total", (("kind", "online_store_unavailable"),))] == 2
        assert samples[("railyard_ranking_errors_total", (("kind", "live_record"),))] >= 1
        store.client.close()
    finally:
        valkey_process.stop(settings)


@contextmanager
def uvicorn_serving(app) -> Iterator[str]:
    """The app on a real uvicorn server on loopback, for the block; yields its base URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    runner = threading.Thread(target=web.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not web.started:
            assert time.monotonic() < deadline and runner.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        web.should_exit = True
        runner.join(10)


def test_a_real_uvicorn_server_answers_on_loopback(store, serving):
    with uvicorn_serving(create_app(store, [serving], MODEL_NAME)) as base:
        with urllib.request.urlopen(f"{base}/v1/recommend?userId={USER}&k=3", timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["label"] == STABLE and len(answer["recommendations"]) == 3
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as response:
            assert response.status == 200
    assert gray_state.live(store.client, MODEL_NAME, STABLE, 1).requests == 1


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_need_nothing_but_the_service(store, serving, page):
    """Swagger UI and ReDoc come from the service itself, not from a CDN: every script, style
    sheet and icon the page names is a path of the service, and it answers."""
    client = make_app(store, serving)
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and [url for url in assets if not url.startswith("/")] == []
    for url in assets:
        assert client.get(url).status_code == 200, url


def test_the_api_docs_render_in_a_browser_with_no_network(store, serving, offline_browser):
    with uvicorn_serving(create_app(store, [serving], MODEL_NAME)) as base:
        offline_browser.get(f"{base}/docs")
        shown = wait_for_text(offline_browser, "/v1/recommend")
        screenshot(offline_browser, "ranking-service-docs-offline")
    assert "Railyard ranking service" in shown and "/v1/score" in shown
    # Swagger UI's own style sheet is applied: its operation blocks are laid out as flex rows.
    assert computed(offline_browser, ".opblock-summary", "display") == "flex"


def grpc_predictions(server) -> int:
    """gRPC Predict calls a local server answered (its TF Serving request_latency count)."""
    family = server.metrics.request_latency.family()
    return int(
        sum(
            sample.value
            for sample in family.samples
            if sample.name.endswith("_count")
            and sample.labels["API"] == "Predict"
            and sample.labels["entrypoint"] == "GRPC"
        )
    )


def test_requests_are_balanced_over_the_replicas_and_a_replica_down_is_set_aside(
    store, serving, contract_server, start_server, model_root
):
    second = start_server(model_config(model_root, {1, 2}, {"stable": 1, "canary": 2}))
    request = {"instances": [{"userId": USER, "movieId": movie} for movie in range(1, 11)]}
    with client_for(second, attempts=1, timeout_s=5) as other, make_app_over([serving, other], store) as client:
        before = grpc_predictions(contract_server), grpc_predictions(second)
        answers = [client.post("/v1/score", json=request).json() for _ in range(20)]
        assert len({json.dumps(answer["predictions"]) for answer in answers}) == 1  # the same scores from both
        counts = grpc_predictions(contract_server) - before[0], grpc_predictions(second) - before[1]
        assert counts == (10, 10), counts  # round robin: one predict per request

        second.stop()
        for _ in range(10):
            response = client.post("/v1/score", json=request)
            assert response.status_code == 200 and response.json()["predictions"] == answers[0]["predictions"]
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["replicas_down"] == [second.grpc_target]
        samples = metric_samples(client)
    up = "railyard_ranking_tfserving_replica_up"
    assert samples[(up, (("replica", second.grpc_target),))] == 0
    assert samples[(up, (("replica", contract_server.grpc_target),))] == 1
    assert samples.get(("railyard_ranking_errors_total", (("kind", "tfserving_unavailable"),)), 0) == 0  # no 503


def test_the_rank_server_process_balances_two_replicas_and_follows_a_share_change_within_a_second(
    store, serving, contract_server, start_server, model_root, tmp_path
):
    """`railyard rank-server` as its own process, over two replicas named in RAILYARD_SERVING_*:
    a share change written by another process reaches it within a second."""
    second = start_server(model_config(model_root, {1, 2}, {"stable": 1, "canary": 2}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {
        "RAILYARD_SERVING_GRPC": f"{contract_server.grpc_target},{second.grpc_target}",
        "RAILYARD_SERVING_REST": f"{contract_server.rest_url},{second.rest_url}",
    }
    log = (tmp_path / "rank-server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "rank-server", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while not ready(base):
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "rank-server.log").read_text()
            time.sleep(0.2)
        user = next(u for u in range(1, 1_000) if user_bucket(u) < 0.3)
        before = grpc_predictions(contract_server), grpc_predictions(second)
        assert [post_score(base, user)["label"] for _ in range(4)] == [STABLE] * 4
        assert (grpc_predictions(contract_server) - before[0], grpc_predictions(second) - before[1]) == (2, 2)

        for share, expected in ((0.3, CANARY), (0.0, STABLE)):
            gray_state.set_canary_share(store.client, MODEL_NAME, share)
            changed = time.monotonic()
            while post_score(base, user)["label"] != expected:
                assert time.monotonic() - changed < 1.0, "the share change did not arrive within a second"
                time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(30)
        log.close()
    # SIGTERM: uvicorn shuts down gracefully, then ends by the signal it got.
    assert "Application shutdown complete" in (tmp_path / "rank-server.log").read_text()


def ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def post_score(base: str, user: int) -> dict:
    body = json.dumps({"instances": [{"userId": user, "movieId": 1}]}).encode()
    request = urllib.request.Request(f"{base}/v1/score", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.timeout(480)  # two local server starts and the service's own start import TensorFlow
def test_the_rank_server_process_follows_the_homes_store_and_local_server_to_new_ports(batch, model_root, tmp_path):
    """`railyard rank-server` over the home's embedded store and local server (no URLs set): each
    stops and starts again on other ports (port 0 settings), and the service finds them again
    from the home's state without a restart."""
    from infra.local_server import background
    from infra.tfserving.model_config import write_config_atomically
    from infra.tfserving.protocol import CONFIG_FILE

    home = tmp_path / "home"
    settings = Settings(home=home, local_online_store_port=0, local_serving_rest_port=0, local_serving_grpc_port=0)
    served = settings.resolved_serving_model_root
    shutil.copytree(model_root / MODEL_NAME / "1", served / MODEL_NAME / "1")
    write_config_atomically(served / CONFIG_FILE, model_config(served, {1}, {STABLE: 1}))

    def start_serving():
        return background.ensure_local_server(settings.local_serving_dir, served / CONFIG_FILE, 0, 0)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("RAILYARD_SERVING_", "RAILYARD_ONLINE"))
    }
    env |= {
        "RAILYARD_HOME": str(home),
        "RAILYARD_LOCAL_ONLINE_STORE_PORT": "0",
        "RAILYARD_LOCAL_SERVING_REST_PORT": "0",
        "RAILYARD_LOCAL_SERVING_GRPC_PORT": "0",
    }
    base, log_path = f"http://127.0.0.1:{port}", tmp_path / "rank-server.log"
    process = None
    try:
        store_before, serving_before = valkey_process.ensure_valkey(settings), start_serving()
        connect(settings).rebuild(*batch)
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli", "rank-server", "--port", str(port)], env=env, stdout=log, stderr=log
            )
        wait_until(lambda: ready(base), process, log_path)
        fresh = post_score(base, USER)
        assert fresh["degraded"] is False

        valkey_process.stop(settings)
        while valkey_process.ensure_valkey(settings).port == store_before.port:  # the point is another port
            valkey_process.stop(settings)
        wait_until(lambda: ready(base) and post_score(base, USER)["degraded"] is False, process, log_path)
        assert post_score(base, USER)["predictions"] == fresh["predictions"]

        background.stop(settings.local_serving_dir)
        serving_after = start_serving()
        assert (serving_after.grpc_port, serving_after.rest_port) != (
            serving_before.grpc_port,
            serving_before.rest_port,
        )
        wait_until(lambda: ready(base), process, log_path)
        assert post_score(base, USER)["predictions"] == fresh["predictions"]
    finally:
        if process is not None:
            process.terminate()
            process.wait(30)
        background.stop(settings.local_serving_dir)
        valkey_process.stop(settings)


def wait_until(condition, process, log_path, timeout_s: float = 120.0) -> None:
    """Until ``condition()`` holds; fails (with the service's log) when the process ends or time is up."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
