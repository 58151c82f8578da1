from dataclasses import asdict
from pathlib import Path

from infra.tfserving.export import export_for_serving
from railyard import tracking, training, warm_start
from railyard.feature_spec import FEATURE_CODE_VERSION
from railyard.features import FeatureSet
from railyard.kinds.registry import LoadedKind
from railyard.locations import Location
from railyard.settings import Settings
from railyard.warm_start import StartPlan
from release.state import model_store, registry
from tasks.common import MINUTES, railyard_task


@railyard_task(name="plan-training-start", timeout_seconds=5 * MINUTES, retries=2, retry_delay_seconds=10)
def plan_start(settings: Settings, kind: LoadedKind, cutoff_ts: int, drift_level: str | None) -> StartPlan:
    """From scratch or from the production version (``railyard.warm_start``)."""
    stages = registry(settings)
    production = stages.production_version()
    plan = warm_start.plan_start(
        settings.training_start,
        cutoff_ts=cutoff_ts,
        production=production,
        lineage=stages.lineage(production) if production is not None else {},
        feature_code=FEATURE_CODE_VERSION,
        kind_fingerprint=training.kind_fingerprint(kind),
        kind_can_warm=hasattr(kind.kind, "warm_start"),
        drift_level=drift_level,
        full_retrain_days=settings.full_retrain_days,
    )
    return plan


@railyard_task(name="train", timeout_seconds=180 * MINUTES)
def train(
    feature_dir: Location, settings: Settings, kind: LoadedKind, run_id: str, plan: StartPlan, work_dir: Path
) -> training.TrainResult:
    print(f"training: {warm_start.describe(plan.how())}")  # here: a run with nothing new to train plans too
    config = settings.train_config()
    warm = None
    if (rows := plan.rows(config.seed)) is not None:
        base = model_store(settings).download(settings.model_name, plan.base_version, work_dir / "warm-start")
        warm = training.WarmStart(warm_start.load_previous(base, plan.base_version), rows)
    started = {"training_start": plan.mode, "warm_replay_share": plan.replay_share}
    started |= {"warm_from": plan.base_version} if plan.mode == "warm" else {}
    tracking.log_params(settings, run_id, asdict(config) | kind.params() | started)

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        tracking.log_metrics(settings, run_id, {f"epoch_{k}": v for k, v in logs.items()}, step=epoch)

    result = training.train_model(feature_dir, config, kind, on_epoch_end=log_epoch, warm=warm)
    tracking.log_metrics(
        settings,
        run_id,
        {
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history.get("loss", [])),
            "fit_rows": result.train_rows,
            "validation_rows": result.validation_rows,
        }
        | {f"kind_{name}": value for name, value in result.figures.items()},
    )
    return result


@railyard_task(name="export-saved-model", timeout_seconds=30 * MINUTES)
def export(
    result: training.TrainResult,
    feature_set: FeatureSet,
    out_dir: Path,
    settings: Settings,
    run_id: str,
    plan: StartPlan,
) -> Path:
    export_dir = export_for_serving(result, feature_set, out_dir, settings.model_name, settings.seed)
    fingerprint = training.kind_fingerprint(result.kind)
    warm_start.write_lineage(export_dir, plan.lineage(feature_set.cutoff_ts, FEATURE_CODE_VERSION, fingerprint))
    tracking.log_artifact(settings, run_id, export_dir, "saved_model")
    return export_dir
