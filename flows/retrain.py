"""The daily retraining flow: data → validation → features → training → evaluation → publish."""

from __future__ import annotations

import time

from prefect import flow
from prefect.runtime import flow_run

from railyard import tracking
from railyard.settings import Settings
from tasks import data, evaluation, features, publish, training, validation

SUMMARY_METRICS = ("auc", "pr_auc", "logloss", "accuracy", "baseline_auc")


class ModelRejected(RuntimeError):
    """The evaluation gate did not bless the model: nothing was published."""


def settings_for_run(**overrides) -> Settings:
    """Environment settings, with the flow's non-empty parameters on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


@flow(name="retrain", log_prints=True)
def retrain(
    data_dir: str | None = None,
    holdout_fraction: float | None = None,
    epochs: int | None = None,
) -> dict:
    """Retrain the recommender on fresh data and publish it to the model store if the gate blesses it.

    Args:
        data_dir: MovieLens-format folder (ratings.csv [+ movies.csv]) or date-partitioned Parquet;
            empty = the generated default data set under RAILYARD_HOME.
        holdout_fraction: share of the newest ratings (by time) held out for evaluation.
        epochs: maximum training epochs (early stopping may end sooner).
    """
    settings = settings_for_run(data_dir=data_dir, holdout_fraction=holdout_fraction, epochs=epochs)
    run_key = flow_run.get_id() or time.strftime("%Y%m%dT%H%M%S")
    run_dir = settings.work_dir / str(run_key)
    report_dir = settings.reports_dir / str(run_key)
    source = settings.data_dir or data.ensure_default_data(settings)

    run_id = tracking.start_run(
        settings,
        run_name=f"retrain-{settings.model_name}",
        tags={"railyard.model": settings.model_name, "prefect.flow_run_id": str(flow_run.get_id()), "railyard.data": str(source)},
    )
    try:
        dataset = data.load_data(source)
        validation.validate_raw(dataset.ratings, settings, report_dir)
        feature_set = features.build_features(dataset, settings.holdout_fraction, run_dir / "features")
        validation.validate_features(feature_set, settings, report_dir)
        tracking.set_tags(settings, run_id, {"railyard.data_fingerprint": feature_set.fingerprint})

        trained = training.train(run_dir / "features", settings, run_id)
        export_dir = training.export(trained, feature_set, run_dir / "export", settings, run_id)
        metrics = evaluation.evaluate(export_dir, feature_set.holdout, settings, run_id, report_dir / "roc.png")
        decision = evaluation.gate(metrics, settings, run_id)
        if not decision.blessed:
            raise ModelRejected(f"model not blessed, nothing published: {decision.reason}")

        published = publish.publish(
            export_dir, settings, run_id, metrics, feature_set.fingerprint, training.code_version(settings)
        )
        registered = publish.register(published, settings, run_id, feature_set.fingerprint)
    except ModelRejected:
        tracking.end_run(settings, run_id, failed=False)  # the run itself worked; its model did not pass
        raise
    except BaseException:
        tracking.end_run(settings, run_id, failed=True)
        raise
    tracking.end_run(settings, run_id, failed=False)

    return {
        "model_name": settings.model_name,
        "model_version": published.version,
        "store_uri": published.uri,
        "reused_existing_version": published.reused,
        "mlflow_run_id": run_id,
        "mlflow_tracking_uri": settings.resolved_tracking_uri,
        "mlflow_model_version": registered,
        "metrics": {name: metrics[name] for name in SUMMARY_METRICS},
        "gate": decision.as_dict(),
        "data_fingerprint": feature_set.fingerprint,
        "holdout_rows": int(metrics["rows"]),
    }
