from dataclasses import asdict
from pathlib import Path

from infra.tfserving.export import export_for_serving
from railyard import model, tracking
from railyard.features import FeatureSet
from railyard.locations import Location
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


@railyard_task(name="train", timeout_seconds=180 * MINUTES)
def train(feature_dir: Location, settings: Settings, run_id: str) -> model.TrainResult:
    config = settings.train_config()
    tracking.log_params(settings, run_id, asdict(config) | {"id_dropout_rate": model.ID_DROPOUT_RATE})

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        tracking.log_metrics(settings, run_id, {f"epoch_{k}": v for k, v in logs.items()}, step=epoch)

    result = model.train_model(feature_dir, config, on_epoch_end=log_epoch)
    tracking.log_metrics(
        settings, run_id, {"best_epoch": result.best_epoch, "epochs_run": len(result.history.get("loss", []))}
    )
    return result


@railyard_task(name="export-saved-model", timeout_seconds=30 * MINUTES)
def export(result: model.TrainResult, feature_set: FeatureSet, out_dir: Path, settings: Settings, run_id: str) -> Path:
    export_dir = export_for_serving(result.model, feature_set, out_dir, settings.model_name, settings.seed)
    tracking.log_artifact(settings, run_id, export_dir, "saved_model")
    return export_dir
