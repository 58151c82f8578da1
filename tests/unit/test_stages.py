"""MLflow promotion stages: legal moves only, aliases follow, every change audited; with a
model store, every change goes first into its hash-chained transition log, which decides."""

import itertools
import json

import pytest

from model_registry import open_store
from model_registry.history import HistoryMismatch, HistoryTampered
from model_registry.stages import IllegalTransition, RegistryOutOfSync, Stage, StageRegistry

_names = itertools.count()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(params=["mlflow only", "with transition log"])
def registry(request, tracking_uri, tmp_path):
    store = open_store(str(tmp_path / "store")) if request.param == "with transition log" else None
    return StageRegistry(tracking_uri, f"model{next(_names)}", store)


@pytest.fixture
def logged(tracking_uri, tmp_path):
    return StageRegistry(tracking_uri, f"model{next(_names)}", open_store(str(tmp_path / "store")))


def _run(registry: StageRegistry, auc: float) -> str:
    experiment = registry.client.get_experiment_by_name("stages") or registry.client.get_experiment(
        registry.client.create_experiment("stages")
    )
    run = registry.client.create_run(experiment.experiment_id)
    registry.client.log_metric(run.info.run_id, "auc", auc)
    return run.info.run_id


def _register(registry: StageRegistry, version: int, auc: float = 0.8, **lineage: str) -> str:
    run_id = _run(registry, auc)
    registry.register(version, f"file:///store/{version}", run_id, lineage=lineage, description="")
    return run_id


def _release(registry: StageRegistry, version: int, actor: str = "alice") -> None:
    registry.transition(version, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)
    registry.transition(version, Stage.PRODUCTION, actor=actor, reason="looks good", flow_run_id="run-9")


def _aliases(registry: StageRegistry) -> dict[str, int]:
    return {k: int(v) for k, v in registry.client.get_registered_model(registry.model).aliases.items()}


def test_release_path_moves_aliases_archives_the_previous_and_keeps_history(registry):
    _register(registry, 1)
    _release(registry, 1)
    assert _aliases(registry) == {"production": 1, "champion": 1}
    _register(registry, 2)
    registry.transition(2, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)
    assert _aliases(registry) == {"production": 1, "champion": 1, "staging": 2}
    registry.transition(2, Stage.PRODUCTION, actor="bob", reason="better AUC", flow_run_id="run-2")

    assert _aliases(registry) == {"production": 2, "champion": 2}
    assert registry.stage(1) is Stage.ARCHIVED and registry.stage(2) is Stage.PRODUCTION
    assert [(e["from"], e["stage"]) for e in registry.history(2)] == [
        (None, "candidate"),
        ("candidate", "staging"),
        ("staging", "production"),
    ]
    last = registry.history(2)[-1]
    assert (last["actor"], last["reason"], last["flow_run_id"]) == ("bob", "better AUC", "run-2")
    assert last["time"].endswith("Z")
    archived = registry.history(1)[-1]
    assert (archived["stage"], archived["actor"], archived["reason"]) == ("archived", "bob", "replaced by version 2")
    assert registry.production_version() == 2 and registry.previous_production() == 1


@pytest.mark.parametrize(
    ("setup", "target", "message"),
    [
        ([], Stage.PRODUCTION, "candidate: it cannot move to production"),
        ([Stage.REJECTED], Stage.PRODUCTION, "rejected: it cannot move to production"),
        ([Stage.REJECTED], Stage.STAGING, "legal next stages: none"),
        ([], Stage.ARCHIVED, "candidate: it cannot move to archived"),
    ],
)
def test_illegal_transitions_are_refused(registry, setup, target, message):
    _register(registry, 1)
    for stage in setup:
        registry.transition(1, stage, actor="x", reason="setup")
    with pytest.raises(IllegalTransition, match=message):
        registry.transition(1, target, actor="x", reason="try", smoke_passed=True)


def test_a_version_that_is_not_registered_cannot_move(registry):
    _register(registry, 1)
    with pytest.raises(IllegalTransition, match="version 2 is not registered"):
        registry.transition(2, Stage.STAGING, actor="railyard", reason="smoke tests passed", smoke_passed=True)


def test_staging_needs_passed_smoke_tests(registry):
    _register(registry, 1)
    with pytest.raises(IllegalTransition, match="needs passed smoke tests"):
        registry.transition(1, Stage.STAGING, actor="railyard", reason="no evidence")
    assert registry.stage(1) is Stage.CANDIDATE


def test_rollback_only_to_a_version_that_was_in_production(registry):
    for version in (1, 2, 3):
        _register(registry, version)
    _release(registry, 1)
    _release(registry, 2)
    with pytest.raises(IllegalTransition, match="candidate"):
        registry.check_transition(3, Stage.PRODUCTION)
    registry.transition(1, Stage.PRODUCTION, actor="carol", reason="rollback: v2 misbehaves")
    assert registry.production_version() == 1 and registry.stage(2) is Stage.ARCHIVED
    assert registry.previous_production() == 2


def test_store_gaps_become_rejected_fillers_and_reregistering_is_idempotent(registry):
    run_id = _register(registry, 3)
    assert [registry.stage(v) for v in (1, 2, 3)] == [Stage.REJECTED, Stage.REJECTED, Stage.CANDIDATE]
    assert "interrupted publication" in registry.history(1)[0]["reason"]
    assert registry.register(3, "file:///store/3", run_id, lineage={}, description="") == 3
    with pytest.raises(RegistryOutOfSync, match="version 3"):
        registry.register(3, "file:///store/3", _run(registry, 0.7), lineage={}, description="")


def test_versions_lists_stage_metrics_approver_and_lineage(registry):
    run_id = _register(registry, 1, auc=0.81, data_fingerprint="abc")
    # Registered with its lineage, stage and first history entry in one call: never seen without them.
    assert registry.lineage(1) == {"data_fingerprint": "abc"}
    assert [(e["from"], e["stage"], e["actor"]) for e in registry.history(1)] == [(None, "candidate", "railyard")]
    registry.set_lineage(1, mlflow_run_id=run_id, serving_label="stable")
    _release(registry, 1, actor="dana")
    (entry,) = registry.versions()
    assert (entry["version"], entry["stage"], entry["approved_by"]) == (1, "production", "dana")
    assert entry["metrics"] == {"auc": 0.81}
    assert registry.lineage(1) == {"mlflow_run_id": run_id, "data_fingerprint": "abc", "serving_label": "stable"}


def test_the_serving_label_tag_follows_production(registry):
    for version in (1, 2):
        _register(registry, version)
        _release(registry, version)
    assert registry.lineage(2)["serving_label"] == "stable"
    assert "serving_label" not in registry.lineage(1)  # archived: it no longer serves


def test_the_run_carrying_a_release_is_recorded_apart_from_lineage(registry):
    _register(registry, 1, data_fingerprint="abc")
    owner = {"flow_run_id": "run-1", "mode": "pause", "process": {"host": "h", "pid": 1, "start": 2}, "deadline": 9.0}
    registry.set_release_run(1, owner)
    assert registry.release_run(1) == owner and registry.lineage(1) == {"data_fingerprint": "abc"}
    registry.set_release_run(1, None)
    assert registry.release_run(1) is None
    assert registry.all_tags()[1]["railyard.stage"] == "candidate"


def test_known_runs_tells_which_runs_mlflow_has(registry):
    run_id = _register(registry, 1)
    assert registry.known_runs([run_id, "0" * 32]) == {run_id}


def test_a_lost_registry_is_restored_from_the_store_without_inventing_history(registry):
    sources = {1: "file:///store/1", 3: "file:///store/3", 4: "file:///store/4"}
    registry.restore(sources, production=3, actor="ops")
    assert [registry.stage(v) for v in (1, 2, 3, 4)] == [
        Stage.ARCHIVED,
        Stage.REJECTED,
        Stage.PRODUCTION,
        Stage.ARCHIVED,
    ]
    assert registry.production_version() == 3 and registry.lineage(3)["serving_label"] == "stable"
    assert "restored from the store by ops" in registry.history(4)[0]["reason"]
    with pytest.raises(IllegalTransition, match="never in production"):  # its history is unknown
        registry.check_transition(4, Stage.PRODUCTION)
    with pytest.raises(RegistryOutOfSync, match="empty registry"):
        registry.restore(sources, production=3, actor="ops")


# -- the transition log ---------------------------------------------------------------------------


def _log_files(registry: StageRegistry) -> list:
    return sorted((registry.store.root / registry.model / ".railyard-history").glob("*.json"))


def test_every_change_is_logged_first_and_mlflow_agrees(logged):
    _register(logged, 1)
    _release(logged, 1)
    _register(logged, 2)
    logged.transition(2, Stage.REJECTED, actor="bob", reason="odd scores")
    records = logged.store.transitions(logged.model)
    assert [(r["version"], r["from"], r["stage"], r["actor"]) for r in records] == [
        (1, None, "candidate", "railyard"),
        (1, "candidate", "staging", "railyard"),
        (1, "staging", "production", "alice"),
        (2, None, "candidate", "railyard"),
        (2, "candidate", "rejected", "bob"),
    ]
    assert records[1]["smoke_passed"] is True
    assert logged.verify_history() == (5, [])


def test_a_rejected_version_dressed_up_in_mlflow_stays_ineligible(logged):
    """Two tag writes made a rejected version look like an archived former production version."""
    _register(logged, 1)
    _release(logged, 1)
    _register(logged, 2)
    logged.transition(2, Stage.REJECTED, actor="bob", reason="odd scores")
    fake = {"stage": "production", "from": "staging", "actor": "alice", "time": "2026-11-30T00:00:00Z"}
    logged.client.set_model_version_tag(logged.model, "2", "railyard.stage", "archived")
    logged.client.set_model_version_tag(logged.model, "2", "railyard.transition.0009", json.dumps(fake))

    with pytest.raises(HistoryMismatch, match="version 2: MLflow says archived, the transition log .* says rejected"):
        logged.check_transition(2, Stage.PRODUCTION)
    assert logged.verify_history()[1] == [
        "version 2: MLflow has transition 2 (production by alice), which the log does not",
        "version 2: the log says rejected, MLflow says archived",
    ]
    assert logged.mirror_log() == [
        "version 2: MLflow had transition 2 (production by alice), which the log does not: "
        "MLflow's history follows the log",
        "version 2: MLflow said archived, the transition log says rejected: MLflow follows the log",
    ]
    assert logged.stage(2) is Stage.REJECTED and logged.verify_history()[1] == []
    assert [entry["stage"] for entry in logged.history(2)] == ["candidate", "rejected"]
    with pytest.raises(IllegalTransition):
        logged.check_transition(2, Stage.PRODUCTION)


def test_a_moved_alias_is_put_back_where_the_log_says(logged):
    _register(logged, 1)
    _release(logged, 1)
    _register(logged, 2)
    logged.client.set_registered_model_alias(logged.model, "production", "2")
    said = logged.mirror_log()
    assert said == ["alias production pointed at 2, the transition log says 1: moved it"]
    assert _aliases(logged)["production"] == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda files: files[1].write_bytes(files[1].read_bytes().replace(b"railyard", b"mallory")), "record 2"),
        (lambda files: files[1].unlink(), "record 1 says it is record 2"),
        (lambda files: (files[0].unlink(), files[1].rename(files[0])), "record 0 says it is record 1"),
    ],
    ids=["edited", "removed", "reordered"],
)
def test_a_tampered_log_is_refused_and_named(logged, damage, message):
    _register(logged, 1)
    _release(logged, 1)
    damage(_log_files(logged))
    with pytest.raises(HistoryTampered, match=message):
        logged.verify_history()
    with pytest.raises(HistoryTampered):
        logged.transition(1, Stage.ARCHIVED, actor="ops", reason="anything")
    with pytest.raises(HistoryTampered):  # nothing is read from a log that does not verify
        logged.stage(1)
    assert logged.all_tags()[1]["railyard.stage"] == "production"  # nothing changed


def test_restore_takes_each_stage_from_the_log(tracking_uri, tmp_path):
    store = open_store(str(tmp_path / "store"))
    name = f"model{next(_names)}"
    first = StageRegistry(tracking_uri, name, store)
    for version in (1, 2, 3):
        _register(first, version)
    _release(first, 1)
    _release(first, 2)
    first.transition(3, Stage.REJECTED, actor="bob", reason="worse")
    lost = StageRegistry(f"sqlite:///{tmp_path / 'fresh.db'}", name, store)  # the tracking database is gone
    lost.restore({v: f"file:///store/{v}" for v in (1, 2, 3)}, production=None, actor="ops")
    assert [lost.stage(v) for v in (1, 2, 3)] == [Stage.ARCHIVED, Stage.PRODUCTION, Stage.REJECTED]
    assert lost.production_version() == 2
    lost.check_transition(1, Stage.PRODUCTION)  # a rollback to 1 is legal: the log says it was in production
    assert lost.previous_production() == 1  # what a plain `railyard rollback` goes back to
    assert [lost.history(v) for v in (1, 2, 3)] == [first.history(v) for v in (1, 2, 3)]  # who, when, why
    assert lost.versions()[1]["approved_by"] == "alice"
    assert lost.verify_history()[1] == []


def test_an_edit_of_the_last_record_shows_against_the_head_mlflow_keeps(logged):
    _register(logged, 1)
    _release(logged, 1)
    last = _log_files(logged)[-1]
    last.write_bytes(last.read_bytes().replace(b"alice", b"mallory"))  # no later record covers it
    count, problems = logged.verify_history()
    assert count == 3 and problems == [
        "version 1, transition 2: MLflow says actor 'alice', the log says 'mallory'",
        "the log's last record (2) is not the one Railyard wrote last (edited or removed)",
    ]
    last.unlink()  # removing it instead
    assert logged.verify_history()[1][-1].startswith("the log's last record (1) is not the one")


def test_a_registered_version_is_linked_to_its_run_as_mlflow_3_links_models(registry):
    """The runs table's Models column lists a run's logged models and the registered versions
    each names in its `mlflow.modelVersions` tag (MLflow 3 UI); a version's `run_id` alone shows
    nothing there."""
    run_id = _register(registry, 1)
    registry.register(1, "file:///store/1", run_id, lineage={}, description="")  # again: still one link
    experiment_id = registry.client.get_run(run_id).info.experiment_id
    linked = [m for m in registry.client.search_logged_models([experiment_id]) if m.source_run_id == run_id]
    assert [json.loads(m.tags["mlflow.modelVersions"]) for m in linked] == [[{"name": registry.model, "version": "1"}]]
    assert linked[0].status.name == "READY"


def test_how_a_release_ended_is_tagged_on_the_run_behind_the_version(registry):
    run_id = _register(registry, 2)  # version 1 becomes a filler with no run behind it
    registry.tag_release_ending(2, "timed out")
    assert registry.client.get_run(run_id).data.tags["railyard.release_ended"] == "timed out"
    registry.tag_release_ending(1, "rejected")  # nothing to tag
