"""The release of model versions: one at a time per model, every ending recorded and announced.

Each change of release state (publish + register, canary, stage changes, label moves) happens
under the model's release lock, which lives in the model store: two runs, a worker and the CLI
on different machines all see it; nothing of it is in process memory. What a run needs to know
later (which run carries a version through its release, how it waits for its review) is
written on the MLflow model version, so a process that was killed leaves enough behind for the
next one to conclude its release (``reconcile``). See docs/release.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from infra.local_server.background import LocalServerError
from infra.rollout import deploy
from infra.tfserving import target as served
from infra.tfserving.client import ServingError
from infra.tfserving.model_config import ConfigFileError
from infra.tfserving.protocol import CANARY, STABLE
from model_registry.release_rules import (
    SYSTEM_ACTOR,
    Ending,
    Outcome,
    Verdict,
    release_ending,
    release_verdict,
    review_outcome,
    serving_plan,
    store_gaps,
)
from model_registry.stages import RELEASE_RUN_TAG, STAGE_TAG, RegistryOutOfSync, Stage, StageRegistry
from railyard import tracking
from railyard.fsutil import prune_oldest
from railyard.notify import notify
from railyard.processes import current_process, describe, process_alive
from railyard.settings import Settings
from tasks import approval, gray
from tasks.common import MINUTES, model_store, railyard_task

log = logging.getLogger("railyard.release")
REVIEW_RUN_TAG = "railyard.review_run"  # the flow run that put a version up for review (kept)
IN_FLIGHT = (Stage.CANDIDATE.value, Stage.STAGING.value)


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


def registry(settings: Settings) -> StageRegistry:
    return StageRegistry(settings.resolved_tracking_uri, settings.model_name, model_store(settings))


@contextmanager
def release_lock(settings: Settings, holder: str, *, wait_s: float | None = None) -> Iterator:
    """Hold the model's release lock (waiting up to ``release_lock_wait_s`` for another release)."""
    owner = f"{holder} ({describe(current_process())})"
    wait = settings.release_lock_wait_s if wait_s is None else wait_s
    with model_store(settings).release_lock(
        settings.model_name, owner=owner, lease_s=settings.release_lock_lease_s, wait_s=wait
    ) as lease:
        yield lease


def release_owner(flow_run_id: str | None, mode: str, deadline: float | None = None) -> dict:
    """What a run records on a version it carries: ``mode`` "run" (working on it), "pause" (waits
    for its review in this process) or "suspend" (waits without a process)."""
    return {"flow_run_id": flow_run_id, "process": current_process(), "mode": mode, "deadline": deadline}


# -- reconciliation ---------------------------------------------------------------------------


def reconcile(
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
                approval.run_view(owner["flow_run_id"]),
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
        target = deploy.resolve_target(settings, start_local=False)
        if target is None and start_serving and served.serving_labels_on_file(settings):
            said.append("the local serving process was not running: started it again")
            target = deploy.resolve_target(settings)
        if target is not None:
            said += repair_serving(settings, target, stages.production_version(), in_review)
    except (ServingError, LocalServerError, ConfigFileError, OSError, TimeoutError) as error:
        # Training can go on: its version waits as a candidate if serving is still down at deploy.
        said.append(f"serving could not be checked or repaired: {error}")
    for line in said:
        log.warning("reconciled %s: %s", settings.model_name, line)
    return said


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
            f"{settings.resolved_tracking_uri} has registered, and its transition log names none of them: the "
            "store and the tracking database do not belong together (RAILYARD_STORE_URI, RAILYARD_MLFLOW_TRACKING_URI)"
        )
    manifests = {v: store.get_manifest(model, v) for v in stored if v not in registered}
    runs = {version: manifest.metadata.get("mlflow_run_id") for version, manifest in manifests.items()}
    gaps = store_gaps(runs, registered, stages.known_runs(run for run in runs.values() if run))
    if gaps.unknown:
        listed = ", ".join(map(str, gaps.unknown))
        raise RegistryLost(
            f"the model store {store.uri} holds {model} version(s) {listed}, published by MLflow runs that "
            f"{settings.resolved_tracking_uri} does not know: the tracking database was lost or replaced. "
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
    approval.close_review(owner["flow_run_id"], f"version {version} was rejected ({reason})")
    approval.cancel_deadline_check(registry(settings).lineage(version).get("deadline_run"), f"rejected: {reason}")
    return f"version {version} was rejected: {reason}"


def fail_interrupted_runs(settings: Settings, ended_run: tuple[str, Ending] | None) -> list[str]:
    """End FAILED the MLflow runs left RUNNING by a process that is gone, with the cause."""
    said = []
    for run in tracking.running_runs(settings):
        flow_run_id = run.data.tags.get("prefect.flow_run_id")
        process = json.loads(run.data.tags.get(tracking.PROCESS_TAG) or "null")
        if ended_run is not None and flow_run_id == ended_run[0]:
            cause = f"{ended_run[1].kind}: {ended_run[1].reason}"
        elif process_alive(process) is False:
            cause = f"interrupted: its process ({describe(process)}) is gone"
        else:
            continue
        tracking.fail_run(settings, run.info.run_id, cause)
        said.append(f"MLflow run {run.info.run_id} was still RUNNING: ended it FAILED ({cause})")
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


@railyard_task(name="reconcile-release-state", timeout_seconds=30 * MINUTES)
def reconcile_task(settings: Settings, holder: str) -> list[str]:
    with release_lock(settings, holder):
        return reconcile(settings)


# -- the steps of one release ----------------------------------------------------------------


@railyard_task(name="register-model-version", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def register(settings: Settings, version: int, source: str, run_id: str, lineage: dict[str, str]) -> int:
    """Store version N becomes MLflow version N, a candidate with its lineage (idempotent)."""
    description = f"store version {version} at {source}"
    return registry(settings).register(version, source, run_id, lineage, description=description)


@railyard_task(name="record-stage", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def record_stage(
    settings: Settings,
    version: int,
    stage: str,
    *,
    actor: str,
    reason: str,
    flow_run_id: str | None,
    smoke_passed: bool | None = None,
) -> dict:
    return registry(settings).transition(
        version, Stage(stage), actor=actor, reason=reason, flow_run_id=flow_run_id, smoke_passed=smoke_passed
    )


def record_rejection(
    settings: Settings, version: int, *, actor: str, reason: str, ending: str, flow_run_id: str | None
) -> None:
    """Reject a version and say so: MLflow's history, the log and the webhook."""
    stages = registry(settings)
    stages.transition(version, Stage.REJECTED, actor=actor, reason=reason, flow_run_id=flow_run_id)
    stages.set_release_run(version, None)
    stages.tag_release_ending(version, ending)
    message = f"{settings.model_name} version {version} was rejected ({ending}) by {actor}: {reason}"
    print(message)
    notify(settings, "rejected", message, version=version, actor=actor, ending=ending)


@railyard_task(name="reject-version", timeout_seconds=10 * MINUTES, retries=1, retry_delay_seconds=10)
def reject(
    target: served.ServingTarget,
    settings: Settings,
    version: int,
    *,
    actor: str,
    reason: str,
    ending: str,
    flow_run_id: str | None,
) -> None:
    """Unload the version if it is served (stable keeps answering), then reject it."""
    registry(settings).check_transition(version, Stage.REJECTED)
    if version in served.served_version_numbers(target, settings.model_name):
        with target.client(attempts=settings.serving_attempts) as client:
            deploy.remove_canary(client, target, settings.model_name, version)
    record_rejection(settings, version, actor=actor, reason=reason, ending=ending, flow_run_id=flow_run_id)


@railyard_task(name="supersede-older-releases", timeout_seconds=10 * MINUTES)
def supersede(target: served.ServingTarget, settings: Settings, version: int, flow_run_id: str | None) -> list[int]:
    """Older versions still awaiting review (or never deployed) give way to this newer one.

    A waiting retrain run is answered "reject" by Railyard, so it wakes up and ends, recording
    why; its version is rejected here at once so that this release can go on.
    """
    superseded = []
    for other, tags in sorted(registry(settings).all_tags().items()):
        if other >= version or tags.get(STAGE_TAG) not in IN_FLIGHT:
            continue
        verdict = release_verdict(Outcome.SUPERSEDED, str(version))
        reject.fn(
            target,
            settings,
            other,
            actor=verdict.actor,
            reason=verdict.reason,
            ending=verdict.ending,
            flow_run_id=flow_run_id,
        )
        waiting_run = tags.get(REVIEW_RUN_TAG) if tags[STAGE_TAG] == Stage.STAGING.value else None
        if waiting_run:
            decision = approval.ApprovalDecision(
                decision=approval.REJECT, reviewer=SYSTEM_ACTOR, comment=verdict.reason
            )
            try:
                approval.answer(waiting_run, decision)
            except Exception as error:  # noqa: BLE001 - the run is gone: reconcile closes its review
                log.info("could not answer the review of flow run %s: %s", waiting_run, error)
        superseded.append(other)
    return superseded


@railyard_task(name="promote-to-production", timeout_seconds=20 * MINUTES)
def promote(
    target: served.ServingTarget, settings: Settings, version: int, *, actor: str, reason: str, flow_run_id: str | None
) -> dict:
    """Checks the stage change is legal, serves the version as ``stable``, then records it.

    The version is copied into the model root first if it is not there (a rollback to an
    archived version); the previous production version is archived by the registry.
    """
    stages = registry(settings)
    stages.check_transition(version, Stage.PRODUCTION)
    deploy.materialize(model_store(settings), settings.model_name, version, target)
    with target.client(attempts=settings.serving_attempts) as client:
        labels = deploy.make_stable(client, target, settings.model_name, version, settings.serving_load_timeout_s)
    stages.transition(version, Stage.PRODUCTION, actor=actor, reason=reason, flow_run_id=flow_run_id)
    stages.set_release_run(version, None)
    message = f"{settings.model_name} version {version} promoted to production by {actor} ({reason})"
    print(message)
    notify(settings, "promoted", message, version=version, actor=actor)
    return labels


def conclude_review(
    target: served.ServingTarget,
    settings: Settings,
    version: int,
    decision: approval.ApprovalDecision | None,
    flow_run_id: str | None,
) -> dict:
    """Apply the reviewer's decision (None: the approval window ran out) if the version still
    awaits it; the last history entry either way (someone else may have decided meanwhile)."""
    stages = registry(settings)
    if stages.stage(version) is Stage.STAGING:
        if decision is None:
            verdict = release_verdict(Outcome.TIMED_OUT, f"{settings.approval_timeout_s} s")
        else:
            verdict = release_verdict(review_outcome(decision.decision), decision.comment, actor=decision.reviewer)
        apply_verdict(target, settings, version, verdict, flow_run_id)
    return stages.history(version)[-1]


def apply_verdict(
    target: served.ServingTarget, settings: Settings, version: int, verdict: Verdict, flow_run_id: str | None
) -> None:
    """Carry out a release verdict: reject (unloading the canary), promote, record staging, or
    leave the version a candidate that no run carries any more."""
    record = dict(actor=verdict.actor, reason=verdict.reason, flow_run_id=flow_run_id)
    if verdict.stage is Stage.REJECTED:
        reject(target, settings, version, ending=verdict.ending, **record)
    elif verdict.stage is Stage.PRODUCTION:
        promote(target, settings, version, **record)
        registry(settings).tag_release_ending(version, Outcome.APPROVED.value)  # not a rollback's promotion
    elif verdict.stage is Stage.STAGING:  # reached only through passed smoke tests
        record_stage(settings, version, Stage.STAGING.value, smoke_passed=True, **record)
    else:
        registry(settings).set_release_run(version, None)
    gray.follow_stage(settings, verdict.stage)


def version_in_review_by(settings: Settings, flow_run_id: str | None) -> int | None:
    """The version this flow run put up for review (it is being resumed after suspending)."""
    if flow_run_id is None:
        return None
    found = [v for v, tags in registry(settings).all_tags().items() if tags.get(REVIEW_RUN_TAG) == flow_run_id]
    return max(found, default=None)


@railyard_task(name="read-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def production_version(settings: Settings) -> int | None:
    return registry(settings).production_version()


def stage_of(settings: Settings, version: int) -> str:
    return registry(settings).stage(version).value


@railyard_task(name="read-previous-production-version", timeout_seconds=2 * MINUTES, retries=2, retry_delay_seconds=10)
def previous_production_version(settings: Settings) -> int | None:
    return registry(settings).previous_production()


def restore_registry(settings: Settings, actor: str) -> tuple[list[int], int | None]:
    """Rebuild a lost registry from the store (see ``StageRegistry.restore``): the versions, and
    the one that is production again because `stable` serves it."""
    store, model = model_store(settings), settings.model_name
    versions = store.list_versions(model)
    production = served.serving_labels_on_file(settings).get(STABLE)
    sources = {version: store.version_uri(model, version) for version in versions}
    registry(settings).restore(sources, production if production in sources else None, actor=actor)
    return versions, production
