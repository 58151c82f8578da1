"""Reconciliation: bring the release state in line with what really happened.

A run that was killed, a review nobody answered, a publication cut short, a server that serves
what its config does not say: each is concluded here, one sentence per repair, by whoever holds
the release lock next (a run, the deadline's reconcile run, the CLI). See docs/release.md.
"""

from __future__ import annotations

import json
import logging
import time

from infra.local_server import background
from infra.local_server.background import LocalServerError
from infra.rollout import deploy
from infra.tfserving import target as served
from infra.tfserving.client import ServingError
from infra.tfserving.model_config import ConfigFileError
from infra.tfserving.protocol import CANARY, STABLE
from model_registry.release_rules import SYSTEM_ACTOR, Ending, release_ending, serving_plan, store_gaps
from model_registry.stages import RELEASE_RUN_TAG, STAGE_TAG, RegistryOutOfSync, Stage, StageRegistry
from railyard import tracking
from railyard.fsutil import prune_oldest
from railyard.processes import describe, process_alive
from railyard.settings import Settings
from release.state import IN_FLIGHT, model_store, record_rejection, registry, release_lock

log = logging.getLogger("railyard.release")


class RegistryLost(RegistryOutOfSync):
    """The store holds versions that MLflow has never heard of: its database was lost or replaced."""

    next_step = "restore the MLflow database, or run `railyard restore-registry`; nothing was changed"


class StoreMismatch(RegistryOutOfSync):
    """MLflow has versions that the model store neither holds nor has a record of: the store and
    the tracking database do not belong together."""

    next_step = (
        "nothing was changed; point RAILYARD_STORE_URI at the store these versions were published to, "
        "or RAILYARD_MLFLOW_TRACKING_URI at this store's tracking database"
    )


def repair_release_state(
    settings: Settings, *, start_serving: bool = True, ended_run: tuple[str, Ending] | None = None
) -> list[str]:
    """Bring the release state in line with what really happened; one sentence per repair.

    Call it holding the release lock. Refuses (RegistryLost) when the store holds versions MLflow
    does not know, and, with ``start_serving``, (PortTaken) a local serving port set in the
    settings that another program holds, before any work. ``ended_run``: a flow run known to be
    over, and how (its crash hook says so).
    """
    if start_serving:
        deploy.refuse_taken_local_ports(settings)
    stages = registry(settings)
    said = register_stranded(settings, stages)  # refuses first when the tracking database was lost
    said += stages.mirror_log()
    in_review = None
    for version, tags in sorted(stages.all_tags().items()):
        owner = json.loads(tags.get(RELEASE_RUN_TAG) or "null")
        if owner is None or tags.get(STAGE_TAG) not in IN_FLIGHT:
            continue
        if ended_run is not None and owner.get("flow_run_id") == ended_run[0]:
            ending = ended_run[1]
        else:
            ending = release_ending(
                owner,
                _review_runs().run_view(owner["flow_run_id"]),
                now=time.time(),
                process_alive=process_alive(owner.get("process")),
            )
        if ending is None:
            in_review = version if tags[STAGE_TAG] == Stage.STAGING.value else in_review
        else:
            said.append(end_release(settings, version, Stage(tags[STAGE_TAG]), ending, owner))
    said += fail_interrupted_runs(settings, ended_run)
    said += tidy(settings)
    try:
        target = deploy.resolve_target(settings)
        if target is None and start_serving and served.serving_labels_on_file(settings):
            said.append("the local serving process was not running: started it again")
            background.start_for(settings)
            target = deploy.resolve_target(settings)
        if target is not None:
            said += repair_serving(settings, target, stages.production_version(), in_review)
    except (ServingError, LocalServerError, ConfigFileError, OSError, TimeoutError) as error:
        # Training can go on: its version waits as a candidate if serving is still down at deploy.
        said.append(f"serving could not be checked or repaired: {error}")
    for line in said:
        log.warning("reconciled %s: %s", settings.model_name, line)
    return said


def conclude_ended_run(settings: Settings, holder: str, flow_run_id: str, ending: Ending) -> list[str]:
    """Under the release lock, conclude the release of a flow run known to be over (its crash or
    cancellation hook says how it ended); what was done, or why it could not be done now."""
    try:
        with release_lock(settings, holder):
            return repair_release_state(settings, start_serving=False, ended_run=(flow_run_id, ending))
    except Exception as error:  # noqa: BLE001 - the hook announces the interruption even so
        return [f"its release could not be concluded now ({error}); the next run or `railyard status` will"]


def tidy(settings: Settings) -> list[str]:
    """What interrupted publications left in the store (no publication is in flight: the caller
    holds the release lock), and old per-run scratch folders."""
    said = [
        f"removed the files of unfinished publication {version} (its number stays taken)"
        for version in model_store(settings).remove_unfinished(settings.model_name)
    ]
    keep = settings.keep_run_dirs
    removed = prune_oldest(settings.work_dir, keep) + prune_oldest(settings.reports_dir, keep)
    if removed:
        said.append(f"removed {len(removed)} old run folders (RAILYARD_KEEP_RUN_DIRS={keep} of each kept)")
    return said


def register_stranded(settings: Settings, stages: StageRegistry) -> list[str]:
    """Register store versions that were published but never registered; refuse unknown ones,
    and a store that knows none of MLflow's versions (neither holds them nor logged them)."""
    store, model = model_store(settings), settings.model_name
    registered, stored = set(stages.all_tags()), store.list_versions(model)
    if registered and registered.isdisjoint(stored) and registered.isdisjoint(stages.logged_versions()):
        listed = ", ".join(map(str, sorted(registered)))
        raise StoreMismatch(
            f"the model store {store.uri} holds none of {model} versions {listed} that the tracking database "
            f"{settings.shown_tracking_uri} has registered, and its transition log names none of them: the "
            "store and the tracking database do not belong together (RAILYARD_STORE_URI, RAILYARD_MLFLOW_TRACKING_URI)"
        )
    manifests = {v: store.get_manifest(model, v) for v in stored if v not in registered}
    runs = {version: manifest.metadata.get("mlflow_run_id") for version, manifest in manifests.items()}
    gaps = store_gaps(runs, registered, stages.known_runs(run for run in runs.values() if run))
    if gaps.unknown:
        listed = ", ".join(map(str, gaps.unknown))
        raise RegistryLost(
            f"the model store {store.uri} holds {model} version(s) {listed}, published by MLflow runs that "
            f"{settings.shown_tracking_uri} does not know: the tracking database was lost or replaced. "
            "Nothing was changed. Restore the database (or point RAILYARD_MLFLOW_TRACKING_URI at it), or "
            "rebuild the registry from the store with `railyard restore-registry`."
        )
    said = []
    for version in gaps.stranded:
        manifest = manifests[version]
        lineage = {
            "mlflow_run_id": runs[version],
            "data_fingerprint": manifest.metadata["data_fingerprint"],
            "store_uri": store.version_uri(model, version),
            "manifest_sha256": manifest.checksum,
        }
        if "model_kind" in manifest.metadata:  # versions published before kinds have none
            lineage["model_kind"] = manifest.metadata["model_kind"]
        stages.register(version, store.version_uri(model, version), runs[version], lineage, description="")
        said.append(f"version {version} was published but never registered: registered it as a candidate")
    return said


def end_release(settings: Settings, version: int, stage: Stage, ending: Ending, owner: dict) -> str:
    """Conclude the release of a version whose run is gone (its canary goes with the serving repair)."""
    if stage is Stage.CANDIDATE:
        registry(settings).set_release_run(version, None)
        return f"version {version} stays a candidate ({ending.kind}: {ending.reason}); a re-run on the same data releases it"
    reason = f"{ending.kind}: {ending.reason}"
    record_rejection(
        settings, version, actor=SYSTEM_ACTOR, reason=reason, ending=ending.kind, flow_run_id=owner.get("flow_run_id")
    )
    review_runs = _review_runs()
    review_runs.close_review(owner["flow_run_id"], f"version {version} was rejected ({reason})")
    review_runs.cancel_deadline_check(registry(settings).lineage(version).get("deadline_run"), f"rejected: {reason}")
    return f"version {version} was rejected: {reason}"


def fail_interrupted_runs(settings: Settings, ended_run: tuple[str, Ending] | None) -> list[str]:
    """End FAILED the MLflow runs left RUNNING by a process that is gone, with the cause."""
    said = []
    for run in tracking.running_runs(settings):
        flow_run_id = run["tags"].get("prefect.flow_run_id")
        process = json.loads(run["tags"].get(tracking.PROCESS_TAG) or "null")
        if ended_run is not None and flow_run_id == ended_run[0]:
            cause = f"{ended_run[1].kind}: {ended_run[1].reason}"
        elif process_alive(process) is False:
            cause = f"interrupted: its process ({describe(process)}) is gone"
        else:
            continue
        tracking.fail_run(settings, run["run_id"], cause)
        said.append(f"MLflow run {run['run_id']} was still RUNNING: ended it FAILED ({cause})")
    return said


def repair_serving(
    settings: Settings, target: served.ServingTarget, production: int | None, in_review: int | None
) -> list[str]:
    """Make the server serve what its config file says, and the file what MLflow says."""
    model, said = settings.model_name, []
    with target.clients(attempts=settings.serving_attempts) as clients:
        client = clients[0]
        on_file = served.serving_labels(target, model)
        for replica in clients:
            live = {label: v for label in (STABLE, CANARY) if (v := replica.label_version(model, label)) is not None}
            if live != on_file:
                replica.reload_config(served.known_good_config(target))
                said.append(
                    f"the server at {replica.grpc_target} served {dict(sorted(live.items())) or 'nothing'} but its "
                    f"config says {dict(sorted(on_file.items())) or 'nothing'}: sent the config again"
                )
        plan = serving_plan(production, in_review, on_file)
        store = model_store(settings)
        for version in (plan.stable, plan.canary):
            if version is not None:
                deploy.materialize(store, model, version, target)
        timeout = settings.serving_load_timeout_s
        if plan.stable is not None:
            deploy.make_stable(client, target, model, plan.stable, timeout)
            said.append(
                f"stable served {on_file.get(STABLE)}, MLflow's production version is {plan.stable}: moved stable to it"
            )
        if plan.canary is not None:
            deploy.deploy_canary(client, target, model, plan.canary, timeout)
            said.append(f"version {plan.canary} awaits review but was not the canary: loaded it as canary again")
        if plan.unload is not None:
            deploy.remove_canary(client, target, model, plan.unload)
            said.append(f"version {plan.unload} was still served as canary: unloaded it")
    return said


def restore_registry(settings: Settings, actor: str) -> tuple[list[int], int | None]:
    """Rebuild a lost registry from the store (see ``StageRegistry.restore``): the versions, and
    the one that is production again because `stable` serves it."""
    store, model = model_store(settings), settings.model_name
    versions = store.list_versions(model)
    production = served.serving_labels_on_file(settings).get(STABLE)
    sources = {version: store.version_uri(model, version) for version in versions}
    registry(settings).restore(sources, production if production in sources else None, actor=actor)
    return versions, production


def _review_runs():
    """Prefect's client, imported only when a version in flight needs its run asked about: it costs
    about a second and a half of every `railyard status` otherwise."""
    from release import review_runs

    return review_runs
