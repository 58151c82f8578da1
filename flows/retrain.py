"""The daily retraining flow, from raw ratings to a reviewed production release.

data → validation → features → validation → training → export → evaluation against thresholds
and against the production model on the same holdout → publish to the store → MLflow candidate
→ TF Serving canary → smoke tests (rollback on failure) → approval → production (or rejection).
"""

from __future__ import annotations

import time
from typing import Annotated

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field
from prefect.runtime import flow_run

from infra.serving_client import ModelLoadError
from railyard import tracking
from railyard.notify import notify
from railyard.settings import Settings
from tasks import approval, data, deploy, evaluation, features, publish, release, smoke, training, validation

SUMMARY_METRICS = ("auc", "pr_auc", "logloss", "accuracy", "baseline_auc")
SYSTEM_ACTOR = "railyard"


class ModelRejected(RuntimeError):
    """The evaluation gate did not bless the model: nothing was published."""


class SmokeTestsFailed(RuntimeError):
    """The canary failed its smoke tests: it was unloaded and the version rejected."""


def settings_for_run(**overrides) -> Settings:
    """Environment settings, with the flow's non-empty parameters on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def curl_line(rest_url: str, model: str, label: str) -> str:
    body = '{"instances": [{"userId": 6, "movieId": 1}]}'
    return f"curl -s -d '{body}' {rest_url}/v1/models/{model}/labels/{label}:predict"


NEXT_STEPS = {
    "DataLoadError": "fix the input data named in the message and start the run again",
    "DataValidationError": "read the HTML report under RAILYARD_HOME/reports, fix or accept the data, start again",
    "ModelRejected": "see the evaluation-gate table; nothing was published and production is unchanged",
    "SmokeTestsFailed": "see the smoke-tests artifact; the canary was unloaded and stable is unchanged",
}


def report_failure(flow, flow_run, state) -> None:
    """Failure hook: an artifact and a notification saying what happened and what to do next."""
    error = state.result(raise_on_failure=False)
    kind = type(error).__name__ if isinstance(error, BaseException) else "failure"
    next_step = NEXT_STEPS.get(kind, "read the flow run's logs; production keeps serving the last approved version")
    message = f"retrain run {flow_run.name} failed ({kind}): {state.message}"
    create_markdown_artifact(
        key="run-failed", markdown=f"## What happened\n\n{message}\n\n## What to do\n\n{next_step}", description=kind
    )
    notify(Settings(), "run_failed", message, next_step=next_step, flow_run_id=str(flow_run.id))


@flow(name="retrain", log_prints=True, on_failure=[report_failure])
def retrain(
    data_dir: Annotated[str | None, Field(description="Ratings folder; empty = RAILYARD_DATA_DIR or generated data.")] = None,
    holdout_fraction: Annotated[float | None, Field(gt=0, lt=1, description="Newest share held out.")] = None,
    epochs: Annotated[int | None, Field(ge=1, le=200, description="Maximum training epochs.")] = None,
    auto_approve: Annotated[bool, Field(description="Promote without a reviewer when every check passes.")] = False,
) -> dict:
    """Retrain the recommender on fresh data and release it through canary, smoke tests and approval.

    Args:
        data_dir: MovieLens-format folder (ratings.csv [+ movies.csv]) or date-partitioned Parquet;
            empty = the generated default data set under RAILYARD_HOME.
        holdout_fraction: share of the newest ratings (by time) held out for evaluation.
        epochs: maximum training epochs (early stopping may end sooner).
        auto_approve: promote without a reviewer when every check passed (off for the schedule).
    """
    settings = settings_for_run(data_dir=data_dir, holdout_fraction=holdout_fraction, epochs=epochs)
    prefect_run_id = str(flow_run.get_id()) if flow_run.get_id() else None
    run_key = prefect_run_id or time.strftime("%Y%m%dT%H%M%S")
    run_dir = settings.work_dir / run_key
    report_dir = settings.reports_dir / run_key
    source = settings.data_dir or data.ensure_default_data(settings)

    run_id = tracking.start_run(
        settings,
        run_name=f"retrain-{settings.model_name}",
        tags={"railyard.model": settings.model_name, "prefect.flow_run_id": str(prefect_run_id), "railyard.data": str(source)},
    )
    try:
        dataset = data.load_data(source)
        validation.validate_raw(dataset.ratings, settings, report_dir)
        feature_set = features.build_features(dataset, settings.holdout_fraction, run_dir / "features")
        del dataset  # from here on the features are the data: let the raw ratings go
        validation.validate_features(feature_set, settings, report_dir)
        feature_set = feature_set.without_training_rows()  # training streams them from the Parquet
        tracking.set_tags(settings, run_id, {"railyard.data_fingerprint": feature_set.fingerprint})

        trained = training.train(run_dir / "features", settings, run_id)
        export_dir = training.export(trained, feature_set, run_dir / "export", settings, run_id)
        metrics = evaluation.evaluate(export_dir, feature_set.holdout, settings, run_id, report_dir / "roc.png")
        production_version = release.production_version(settings)
        production_metrics = (
            evaluation.evaluate_production(production_version, feature_set.holdout, settings, run_id, run_dir)
            if production_version is not None
            else None
        )
        decision = evaluation.gate(metrics, settings, run_id, production_metrics, production_version)
        if not decision.blessed:
            tracking.set_tags(settings, run_id, {"railyard.stage": "rejected", "railyard.rejected_reason": decision.reason})
            raise ModelRejected(f"model not blessed, nothing published: {decision.reason}")

        published = publish.publish(
            export_dir, settings, run_id, metrics, feature_set.fingerprint, training.code_version(settings)
        )
        version = published.version
        release.register(
            settings,
            version,
            published.uri,
            run_id,
            lineage={
                "mlflow_run_id": run_id,
                "data_fingerprint": feature_set.fingerprint,
                "store_uri": published.uri,
                "manifest_sha256": published.manifest.checksum,
                "prefect_flow_run_id": str(prefect_run_id),
            },
        )
    except ModelRejected:
        tracking.end_run(settings, run_id, failed=False)  # the run itself worked; its model did not pass
        raise
    except BaseException:
        tracking.end_run(settings, run_id, failed=True)
        raise
    tracking.end_run(settings, run_id, failed=False)

    summary = {
        "model_name": settings.model_name,
        "model_version": version,
        "store_uri": published.uri,
        "reused_existing_version": published.reused,
        "mlflow_run_id": run_id,
        "mlflow_tracking_uri": settings.resolved_tracking_uri,
        "mlflow_model_version": str(version),
        "metrics": {name: metrics[name] for name in SUMMARY_METRICS},
        "gate": decision.as_dict(),
        "data_fingerprint": feature_set.fingerprint,
        "holdout_rows": int(metrics["rows"]),
    }
    if published.reused:
        # Same data and code as an existing version: that version already went through its release.
        print(f"version {version} already holds this model (same data and code); nothing new to release")
        return summary | {"stage": release.stage_of(settings, version)}
    return summary | release_version(settings, version, run_id, prefect_run_id, auto_approve, decision.reason)


def release_version(
    settings: Settings, version: int, run_id: str, prefect_run_id: str | None, auto_approve: bool, gate_reason: str
) -> dict:
    """Canary → smoke tests → approval → production; the stage and what serving looks like after."""
    target = deploy.serving_target(settings)
    record = dict(actor=SYSTEM_ACTOR, flow_run_id=prefect_run_id)
    try:
        deploy.deploy_canary(target, settings, version)
    except ModelLoadError as error:  # the model itself is broken: it never becomes servable
        release.record_stage(settings, version, "rejected", reason=f"TF Serving could not load it: {error}", **record)
        raise
    # Anything else (serving down, a timeout) leaves the version a candidate, to deploy again later.
    report = smoke.smoke_tests(target, settings, version, run_id)
    if not report.passed:
        deploy.remove_canary(target, settings, version)
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failures())
        release.record_stage(settings, version, "rejected", reason=f"smoke tests failed: {failed}", **record)
        raise SmokeTestsFailed(report.summary())
    release.record_stage(settings, version, "staging", reason="smoke tests passed", smoke_passed=True, **record)

    if auto_approve:
        decision = approval.ApprovalDecision(approve=True, reviewer=f"{SYSTEM_ACTOR} (auto_approve)", comment=gate_reason)
    else:
        decision = approval.request_approval(settings, version, f"```\n{report.summary()}\n```\n\nGate: {gate_reason}")
    if decision is None or not decision.approve:
        deploy.remove_canary(target, settings, version)
        actor, reason = (
            (SYSTEM_ACTOR, f"no approval within {settings.approval_timeout_s} s")
            if decision is None
            else (decision.reviewer, decision.comment or "rejected by the reviewer")
        )
        release.record_stage(settings, version, "rejected", reason=reason, actor=actor, flow_run_id=prefect_run_id)
        stage = "rejected"
        print(f"version {version} rejected ({reason}); stable is unchanged")
    else:
        reason = decision.comment or "approved"
        release.promote(target, settings, version, actor=decision.reviewer, reason=reason, flow_run_id=prefect_run_id)
        stage = "production"
    labels = deploy.serving_labels(target, settings)
    served_label = "stable" if "stable" in labels else "canary"
    return {
        "stage": stage,
        "smoke": {"passed": report.passed, "latency_ms": report.latency_ms, "requests": report.requests},
        "serving": {"rest": target.rest, "grpc": target.grpc, "labels": labels},
        "curl": curl_line(target.rest, settings.model_name, served_label) if labels else None,
    }
