"""The daily retraining flow, from raw ratings to a reviewed production release.

data → validation → online store skew check → drift check of the window's statistics against
production's (a block stops the run here) → the training plan (from scratch or warm) → features
(the training rows the plan reads, and the holdout) → validation → training (or the stored
version, when this data and code were released before) → evaluation against thresholds and
against the production model on the same holdout → under the release lock: the gate again if
production changed meanwhile, publish, register, canary, smoke tests (rollback on failure) →
review (suspended or paused) → under the lock again: production or rejection.
docs/release.md tells how a release ends in every case.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Literal

from prefect import flow
from prefect.runtime import deployment, flow_run
from prefect.states import State
from pydantic import Field

from flows.release_orchestration import (
    canary_release,
    ending_state,
    finish_review,
    nothing_new,
    refuse,
    request_review,
    serving_summary,
)
from infra.online_store.background_fill import BackgroundFill
from model_registry.release_rules import Ending
from railyard import errors, model_input, tracking, warm_start
from railyard.drift import DataDrift, Verdict, verdict_lineage, write_statistics
from railyard.errors import CanaryRolledBack, ModelRejected, SmokeTestsFailed
from railyard.evaluation import GateDecision, Holdout
from railyard.features import FeatureSet, holdout_cutoff, read_feature_set
from railyard.kinds.registry import LoadedKind, load_kind
from railyard.locations import Location
from railyard.notify import notify
from railyard.review import DataWindow, ReviewRequest
from railyard.settings import Settings
from railyard.training import code_version as model_code_version
from railyard.warm_start import Replay, StartPlan
from release import review_runs, traffic
from release import state as release_state
from release.reconcile import conclude_ended_run
from tasks import data, drift, evaluation, features, online, publish, release_steps, serving, training, validation

SUMMARY_METRICS = ("auc", "auc_frozen", "baseline_auc", "fresh_baseline_auc", "pr_auc", "logloss", "accuracy")
# The Custom run form shows these (the settings where the deployment was registered): an empty
# field falls back to the settings where the run runs.
_DEFAULTS = Settings()


def settings_for_run(**overrides) -> Settings:
    """Environment settings, with the flow's non-empty parameters on top."""
    return Settings(**{key: value for key, value in overrides.items() if value not in (None, "")})


INTERRUPTED_NEXT_STEP = "its release was concluded (see the MLflow history); production keeps the last approved version"


def report_failure(flow, flow_run, state) -> None:
    """Failure hook: an artifact and a notification saying what happened and what to do next."""
    error = state.result(raise_on_failure=False)
    kind = type(error).__name__ if isinstance(error, BaseException) else "failure"
    message = f"retrain run {flow_run.name} failed ({kind}): {state.message}"
    _announce_failure(flow_run, message, kind, errors.next_step(error))


def report_interruption(flow, flow_run, state) -> None:
    """Crash and cancellation hook (also run by the worker when the run's process died): the
    run's release is concluded as crashed or cancelled, then announced like a failure."""
    kind = "cancelled" if state.is_cancelled() else "crashed"
    ending = Ending(kind, f"its run {flow_run.name} {kind}: {state.message}")
    said = conclude_ended_run(Settings(), f"{kind} hook of retrain run {flow_run.id}", str(flow_run.id), ending)
    details = "\n".join(f"- {line}" for line in said)
    _announce_failure(
        flow_run, f"retrain run {flow_run.name} {kind}: {state.message}\n\n{details}", kind, INTERRUPTED_NEXT_STEP
    )


def _announce_failure(flow_run, message: str, kind: str, next_step: str) -> None:
    markdown = f"## What happened\n\n{message}\n\n## What to do\n\n{next_step}"
    review_runs.post_artifact(str(flow_run.id), "run-failed", markdown, description=kind)
    notify(Settings(), "run_failed", message, next_step=next_step, flow_run_id=str(flow_run.id))


@flow(
    name="retrain",
    log_prints=True,
    on_failure=[report_failure],
    on_crashed=[report_interruption],
    on_cancellation=[report_interruption],
)
def retrain(
    data_dir: Annotated[str | None, Field(json_schema_extra={"default": str(_DEFAULTS.data_dir or "")})] = None,
    holdout_fraction: Annotated[
        float | None, Field(gt=0, lt=1, json_schema_extra={"default": _DEFAULTS.holdout_fraction})
    ] = None,
    epochs: Annotated[int | None, Field(ge=1, le=200, json_schema_extra={"default": _DEFAULTS.epochs})] = None,
    model_kind: Annotated[str | None, Field(json_schema_extra={"default": _DEFAULTS.model_kind})] = None,
    training_start: Annotated[
        Literal["full", "warm", "auto"] | None, Field(json_schema_extra={"default": _DEFAULTS.training_start})
    ] = None,
    auto_approve: bool = False,
) -> State:
    """Retrain the recommender on fresh data and release it through canary, smoke tests and review.

    Args:
        data_dir: MovieLens-format folder (ratings.csv [+ movies.csv]) or date-partitioned Parquet.
            Empty: RAILYARD_DATA_DIR, or the generated sample data set when that is not set either.
        holdout_fraction: Newest share of ratings (by time) held out for evaluation (RAILYARD_HOLDOUT_FRACTION).
        epochs: Maximum training epochs; early stopping may end sooner (RAILYARD_EPOCHS).
        model_kind: The model kind to train: a registered name (fresh_wd, neural_cf) or package.module:object
            (RAILYARD_MODEL_KIND; its own settings are RAILYARD_<KIND>_* where the run runs).
        training_start: full (from scratch), warm (from the production version's weights, on the
            ratings since its cut-off and a replay sample) or auto (RAILYARD_TRAINING_START).
        auto_approve: Promote without a reviewer when every check passes (off for the schedule).
    """
    settings = settings_for_run(
        data_dir=data_dir,
        holdout_fraction=holdout_fraction,
        epochs=epochs,
        model_kind=model_kind,
        training_start=training_start,
    )
    prefect_run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    holder = f"retrain run {prefect_run_id}"
    resumed = release_state.version_in_review_by(settings, prefect_run_id)
    if resumed is not None:  # the run was suspended for its review and now starts again
        summary = {"model_name": settings.model_name, "model_version": resumed}
        return finish_review(settings, resumed, prefect_run_id, summary, suspend=True)
    kind = load_kind(settings.model_kind)  # a kind that does not resolve is refused before any work
    for line in release_steps.repair_under_lock(settings, holder):
        print(f"repaired: {line}")

    run_key = prefect_run_id or time.strftime("%Y%m%dT%H%M%S")
    run_dir, report_dir = settings.work_dir / run_key, settings.reports_dir / run_key
    feature_dir = settings.feature_folder(run_key)
    code_version = model_code_version(settings.train_config(), kind)
    source = settings.data_dir or data.ensure_default_data(settings)
    model = settings.model_name
    tags = {
        "railyard.model": model,
        "railyard.model_kind": kind.name,
        "railyard.code_version": code_version,
        "prefect.flow_run_id": str(prefect_run_id),
        "railyard.data": str(source),
    }
    with (
        tracking.mlflow_run(
            settings,
            f"{model}-training",
            tags,
            finished_on=(ModelRejected, SmokeTestsFailed, CanaryRolledBack, DataDrift),
        ) as run_id,
        ExitStack() as on_exit,  # a run that ends early stops its online store fill
    ):
        feature_set, statistics, verdict, plan, fill = validated_features(
            settings, kind, source, feature_dir, run_dir, report_dir, run_id, on_exit
        )

        def skew_checked() -> None:
            """An empty store's fill ended and its skew recorded (it ran while the run trained)."""
            if fill is not None:
                online.await_fill(fill, settings, run_id)

        summary = {
            "model_name": model,
            "model_kind": kind.name,
            "mlflow_run_id": run_id,
            "mlflow_tracking_uri": settings.shown_tracking_uri,
            "data_fingerprint": feature_set.fingerprint,
            "drift": verdict.as_dict() if verdict is not None else None,
        }
        # The same data and code as a stored version: that version is the model (no new training).
        existing = publish.find_published(settings, feature_set.fingerprint, code_version)
        if existing is not None and (stage := release_state.stage_of(settings, existing.version)) != "candidate":
            tracking.rename_run(settings, run_id, f"{model}-unchanged-v{existing.version}")
            skew_checked()
            return nothing_new(settings, existing.version, stage, summary)
        if existing is None:
            trained = training.train(feature_dir, settings, kind, run_id, plan, run_dir)
            export_dir = training.export(trained, feature_set, run_dir / "export", settings, run_id, plan)
            write_statistics(statistics, export_dir)  # kept with the version, under its manifest
        else:
            print(
                f"version {existing.version} holds a model of this data and code that was never released: releasing it"
            )
            export_dir = publish.fetch(settings, existing.version, run_dir / "stored")
        trained_how = warm_start.read_lineage(export_dir)  # from scratch or warm, and why: kept with the version
        holdout = evaluation.prepare_holdout(feature_set)
        skew_checked()  # before the gate: a skewed store stops the release
        metrics, decision = evaluate_against_production(
            settings, export_dir, holdout, run_id, run_dir, report_dir, verdict
        )
        summary |= {
            "metrics": {name: metrics[name] for name in SUMMARY_METRICS},
            "gate": decision.as_dict(),
            "holdout_rows": int(metrics["rows"]),
        }
        if not decision.blessed:
            refuse(settings, decision.reason, existing, run_id, prefect_run_id)

        with release_state.release_lock(settings, holder):
            # Production may have changed since the gate (another run promoted, someone rolled
            # back): the model must have been compared with the version it is about to replace.
            if (production := release_steps.production_version(settings)) != decision.baseline_version:
                print(
                    f"production is version {production} now, not {decision.baseline_version} as at the gate: "
                    "comparing again on the same holdout"
                )
                decision = compare_with_production(settings, metrics, holdout, run_id, run_dir, verdict)
                summary["gate"] = decision.as_dict()
                if not decision.blessed:
                    refuse(settings, decision.reason, existing, run_id, prefect_run_id, locked=True)
            if existing is None:
                existing = publish.publish(
                    export_dir, settings, run_id, metrics, feature_set.fingerprint, code_version, kind.name
                ).manifest
            version, store_uri = existing.version, publish.version_uri(settings, existing.version)
            # The version's MLflow run is the one that trained and published it (maybe an earlier run).
            release_steps.register(
                settings,
                version,
                store_uri,
                existing.metadata["mlflow_run_id"],
                lineage={
                    "mlflow_run_id": existing.metadata["mlflow_run_id"],
                    "data_fingerprint": feature_set.fingerprint,
                    "store_uri": store_uri,
                    "manifest_sha256": existing.checksum,
                    "prefect_flow_run_id": str(prefect_run_id),
                    "model_kind": kind.name,
                    "code_version": code_version,
                }
                | verdict_lineage(verdict)
                | trained_how,
            )
            tracking.rename_run(settings, run_id, f"{model}-v{version}")
            summary |= {"model_version": version, "store_uri": store_uri, "mlflow_model_version": str(version)}
            if (stage := release_state.stage_of(settings, version)) != "candidate":  # another run released it meanwhile
                return nothing_new(settings, version, stage, summary)
            target, report = canary_release(settings, version, run_id, prefect_run_id, auto_approve, decision.reason)
    summary |= {"smoke": {"passed": report.passed, "latency_ms": report.latency_ms, "requests": report.requests}}
    if auto_approve:
        return ending_state(
            settings,
            version,
            release_state.registry(settings).history(version)[-1],
            summary | serving_summary(target, settings),
        )

    suspend = deployment.get_id() is not None  # only a deployment's run can be rescheduled
    request = ReviewRequest(
        model=model,
        version=version,
        flow_run=prefect_run_id,
        model_kind=kind.name,
        kind_spec=kind.spec,
        code_version=code_version,
        training=warm_start.describe(trained_how),
        window=DataWindow.of(source, feature_set, int(metrics["rows"])),
        metrics=metrics,
        decision=decision,
        smoke=report,
        skew=tracking.run_metrics(settings, run_id, prefix=online.SKEW_METRIC_PREFIX),
        max_skew_share=settings.max_skew_share,
        deadline=time.time() + settings.approval_timeout_s,
        live=traffic.live_figures(settings, serving.serving_labels(target, settings)),
        drift=verdict,
    )
    instructions = request_review(settings, request, suspend)
    return finish_review(settings, version, prefect_run_id, summary, suspend=suspend, instructions=instructions)


def validated_features(
    settings: Settings,
    kind: LoadedKind,
    source: Path,
    feature_dir: Location,
    run_dir: Path,
    report_dir: Path,
    run_id: str,
    on_exit: ExitStack,
) -> tuple[FeatureSet, dict, Verdict | None, StartPlan, BackgroundFill | None]:
    """Raw data → validation → point-in-time features → validation, with the drift check of the
    window's statistics (railyard/drift.py; a block stops the run) and the training plan (from
    scratch or warm) made as soon as they can be: with Polars, before the build, which then
    writes only the training rows the plan reads. The features come back without the training
    rows (training streams them from the shards written to ``feature_dir``), with the window's
    statistics, and an empty online store's fill, started in the background (stopped by
    ``on_exit`` unless it ended). The suites' reports go to the MLflow run (``validation/``),
    whether they passed or not."""

    def checked_and_planned(statistics: dict, cutoff_ts: int, train_timestamps) -> tuple[Verdict | None, StartPlan]:
        """``train_timestamps()``: the training rows' timestamps, read for a warm start's replay."""
        verdict = drift.check(statistics, settings, run_id, run_dir)  # a block stops the run here
        plan = training.plan_start(settings, kind, cutoff_ts, verdict.level if verdict else None)
        return verdict, plan.sized(train_timestamps(), Replay.of(settings)) if plan.mode == "warm" else plan

    fill = None
    try:
        if settings.feature_engine == "dask":  # on the cluster, validation, skew and statistics too
            feature_set, statistics = features.build_features_on_cluster(
                source, settings, feature_dir, run_dir, report_dir, run_id
            )
            verdict, plan = checked_and_planned(
                statistics, feature_set.cutoff_ts, lambda: model_input.split_timestamps(feature_dir / "train")
            )
        else:
            dataset = data.load_data(source)
            validation.validate_raw(dataset, settings, report_dir)
            statistics = drift.window_statistics(dataset, settings)
            if (fill := online.check_skew(dataset, settings, run_id, run_dir)) is not None:
                on_exit.callback(fill.stop)
            cutoff = holdout_cutoff(dataset.ratings, settings.holdout_fraction)

            def train_timestamps():
                times = dataset.ratings.get_column("timestamp")
                return times.filter(times < cutoff).to_numpy()

            verdict, plan = checked_and_planned(statistics, cutoff, train_timestamps)
            rows = plan.rows(settings.seed)
            feature_set = features.build_features(dataset, settings, feature_dir, rows)
            del dataset  # from here on the features are the data: the raw ratings go before the validation's copies
            validation.validate_features(feature_set, settings, report_dir)
            # Read back without the training rows, once every row is let go: a copy of the holdout
            # beside the table it was cut from was the run's largest resident set (25M: +1.5 GB).
            del feature_set
            feature_set = read_feature_set(feature_dir, with_training_rows=False)
    finally:
        if report_dir.exists():
            tracking.log_artifact(settings, run_id, report_dir, "validation")
    tags = {"railyard.data_fingerprint": feature_set.fingerprint, "railyard.features": str(feature_dir)}
    tracking.set_tags(settings, run_id, tags)
    return feature_set, statistics, verdict, plan, fill


def evaluate_against_production(
    settings: Settings,
    export_dir: Path,
    holdout: Holdout,
    run_id: str,
    run_dir: Path,
    report_dir: Path,
    drift_verdict: Verdict | None,
) -> tuple[dict, GateDecision]:
    """The SavedModel that would ship and the production model, on the same holdout; the gate."""
    metrics = evaluation.evaluate(export_dir, holdout, settings, run_id, report_dir / "roc.png")
    return metrics, compare_with_production(settings, metrics, holdout, run_id, run_dir, drift_verdict)


def compare_with_production(
    settings: Settings,
    metrics: dict,
    holdout: Holdout,
    run_id: str,
    run_dir: Path,
    drift_verdict: Verdict | None,
) -> GateDecision:
    """The gate: the candidate's holdout metrics beside those of the current production version,
    scored on the same holdout rows (absolute thresholds only while there is none); the drift
    check's warnings shown beside its checks."""
    production_version = release_steps.production_version(settings)
    production_metrics = (
        evaluation.evaluate_production(production_version, holdout, settings, run_id, run_dir)
        if production_version is not None
        else None
    )
    return evaluation.gate(metrics, settings, run_id, production_metrics, production_version, drift_verdict)
