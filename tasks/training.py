from dataclasses import asdict
from pathlib import Path

from infra.tfserving.export import export_for_serving
from railyard import tracking, training
from railyard.features import FeatureSet
from railyard.kinds.registry import LoadedKind
from railyard.locations import Location
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


@railyard_task(name="train", timeout_seconds=180 * MINUTES)
def train(feature_dir: Location, settings: Settings, kind: LoadedKind, run_id: str) -> training.TrainResult:
    config = settings.train_config()
    tracking.log_params(settings, run_id, asdict(config) | kind.params())

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        tracking.log_metrics(settings, run_id, {f"epoch_{k}": v for k, v in logs.items()}, step=epoch)

    result = training.train_model(feature_dir, config, kind, on_epoch_end=log_epoch)
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
    result: training.TrainResult, feature_set: FeatureSet, out_dir: Path, settings: Settings, run_id: str
) -> Path:
    export_dir = export_for_serving(result, feature_set, out_dir, settings.model_name, settings.seed)
    tracking.log_artifact(settings, run_id, export_dir, "saved_model")
    return export_dir
