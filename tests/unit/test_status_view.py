"""`railyard status`'s lines: the story of each version, what serves, live figures."""

from cli.status_view import distinct_labels, serving_line, status_lines, version_line, version_story
from railyard.gray_rules import LiveFigures


def _entry(version: int, stage: str, history: list[tuple[str, str, str]], release_run: dict | None = None) -> dict:
    entries = [
        {"stage": s, "from": None, "actor": actor, "time": f"2026-12-0{i + 1}T10:00:00Z", "reason": reason}
        | {"flow_run_id": f"run-{i}"}
        for i, (s, actor, reason) in enumerate(history)
    ]
    metrics = {"auc": 0.8123} if version != 9 else {}
    return {
        "version": version,
        "kind": "fresh_wd",
        "stage": stage,
        "metrics": metrics,
        "approved_by": None,
        "history": entries,
        "release_run": release_run,
    }


def test_a_rejected_version_says_who_rejected_it_and_why():
    story = version_story(_entry(3, "rejected", [("candidate", "railyard", ""), ("rejected", "bob", "odd scores")]))
    assert (story["rejected_by"], story["reason"], story["since"]) == ("bob", "odd scores", "2026-12-02T10:00:00Z")
    assert version_line(story) == (
        "v3    rejected    fresh_wd     auc 0.8123  rejected by bob at 2026-12-02 10:00:00 UTC: odd scores"
    )


def test_a_version_under_review_says_since_when_which_run_and_the_deadline():
    waiting = {"flow_run_id": "abc", "mode": "suspend", "deadline": 1796637600.0, "process": None}
    history = [("candidate", "railyard", ""), ("staging", "railyard", "smoke tests passed")]
    story = version_story(_entry(4, "staging", history, waiting))
    assert story["review"] == {
        "since": "2026-12-02T10:00:00Z",
        "flow_run_id": "abc",
        "deadline": 1796637600.0,
        "waits_by": "suspend",
    }
    assert story["rejected_by"] is None
    assert version_line(story) == (
        "v4    staging     fresh_wd     auc 0.8123  awaiting review since 2026-12-02 10:00:00 UTC, flow run abc, "
        "deadline 2026-12-07 10:00:00 UTC"
    )
    # A staging version whose run is still working on it (not waiting) is no review yet.
    working = version_story(_entry(4, "staging", history, waiting | {"mode": "run"}))
    assert working["review"] is None and "smoke-tested by railyard" in version_line(working)


def test_a_promoted_version_says_by_whom_and_no_metric_reads_none():
    history = [("candidate", "railyard", ""), ("staging", "railyard", "ok"), ("production", "alice", "better")]
    line = version_line(version_story(_entry(9, "production", history)))
    assert line == "v9    production  fresh_wd     auc -       promoted by alice at 2026-12-03 10:00:00 UTC: better"
    assert "None" not in line
    warm = version_story(_entry(9, "production", history) | {"warm_from": "8"})
    assert version_line(warm) == line + "; warm-started from v8" and warm["warm_from"] == "8"


def test_serving_names_each_version_once_and_never_none():
    assert serving_line({"stable": 2, "canary": 2}, None) == "serving: stable -> 2"
    assert serving_line({"stable": 2, "canary": 3}, None) == "serving: stable -> 2, canary -> 3"
    assert serving_line({"stable": None, "canary": None}, None) == "serving: nothing served yet"
    assert serving_line({"stable": None, "canary": 1}, None) == (
        "serving: canary -> 1 (nothing on stable yet: no version has reached production)"
    )
    assert serving_line({}, "the local server is not running") == "serving: the local server is not running"
    assert distinct_labels({"stable": 2, "canary": 2}) == {"stable": 2}


def test_status_lines_repairs_versions_serving_then_live():
    live = [LiveFigures("stable", 2, 0, 0, None, None)]
    lines = status_lines([], {"stable": 2, "canary": 2}, None, live, ["version 1 was rejected: timed out"])
    assert lines == [
        "repaired: version 1 was rejected: timed out",
        "serving: stable -> 2",
        "live: stable v2: no requests yet",
    ]


def test_a_version_trained_on_drifted_data_and_a_run_drift_blocked_are_named():
    history = [("candidate", "railyard", "")]
    warned = version_story(_entry(5, "candidate", history) | {"drift": "warn"})
    assert version_line(warned).endswith("registered by railyard at 2026-12-01 10:00:00 UTC; data drift warned")
    overridden = version_story(_entry(6, "candidate", history) | {"drift": "block", "drift_override": "new partner"})
    assert version_line(overridden).endswith("; data drift block overridden: new partner")
    blocked = {
        "run_id": "r1",
        "name": "recmodel-drift-blocked",
        "tags": {"railyard.drift": "block", "railyard.drift_summary": "drift against production version 2: userId"},
    }
    lines = status_lines([warned], {"stable": None, "canary": None}, None, [], last_run=blocked)
    assert lines[1] == (
        "last run recmodel-drift-blocked (r1): stopped before training by data drift: "
        "drift against production version 2: userId"
    )
    calm = {"run_id": "r2", "name": "recmodel-v7", "tags": {"railyard.drift": "pass"}}
    assert len(status_lines([warned], {}, None, [], last_run=calm)) == 2


def test_the_streaming_scorer_line_shows_lag_pending_and_dead_letters():
    from cli.status_view import scorer_line

    state = {"length": 1_500, "groups": {"scorer": {"pending": 20, "lag": 1_234}}, "dead_letters": 3, "results": 246}
    assert scorer_line(state) == (
        "streaming scorer: 1,500 requests (scorer: 20 pending, lag 1,234), 3 dead letters, 246 results"
    )
    assert scorer_line({"length": 0, "groups": {}, "dead_letters": 0, "results": 0}) == (
        "streaming scorer: 0 requests (no scorer has read them yet), 0 dead letters, 0 results"
    )
    unknown = {"length": 5, "groups": {"scorer": {"pending": 0, "lag": None}}, "dead_letters": 0, "results": 5}
    assert "lag unknown" in scorer_line(unknown)
