import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from infra.warmup import write_warmup_requests
from railyard import __version__, model, tracking
from railyard.features import FEATURE_CODE_VERSION, FeatureSet
from railyard.settings import Settings
from tasks.common import MINUTES, railyard_task


def train_config(settings: Settings) -> model.TrainConfig:
    return model.TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        embedding_dim=settings.embedding_dim,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        early_stopping_patience=settings.early_stopping_patience,
    )


@railyard_task(name="train", timeout_seconds=180 * MINUTES)
def train(feature_dir: Path, settings: Settings, run_id: str) -> model.TrainResult:
    config = train_config(settings)
    tracking.log_params(settings, run_id, asdict(config) | {"id_dropout_rate": model.ID_DROPOUT_RATE})

    def log_epoch(epoch: int, logs: dict[str, float]) -> None:
        tracking.log_metrics(settings, run_id, {f"epoch_{k}": v for k, v in logs.items()}, step=epoch)

    result = model.train_model(feature_dir, config, on_epoch_end=log_epoch)
    tracking.log_metrics(
        settings, run_id, {"best_epoch": result.best_epoch, "epochs_run": len(result.history.get("loss", []))}
    )
    return result


def export_for_serving(trained_model, feature_set: FeatureSet, out_dir: Path, settings: Settings) -> Path:
    """The SavedModel with its golden requests (for the smoke tests) and warm-up requests."""
    export_dir = model.export_serving_model(trained_model, feature_set, out_dir)
    instances = model.golden_instances(feature_set, seed=settings.seed)
    model.write_golden_requests(export_dir, instances)
    # TF Serving replays these while loading, so the first real request does not pay for warm-up.
    write_warmup_requests(export_dir, settings.model_name, instances)
    return export_dir


@railyard_task(name="export-saved-model", timeout_seconds=30 * MINUTES)
def export(result: model.TrainResult, feature_set: FeatureSet, out_dir: Path, settings: Settings, run_id: str) -> Path:
    export_dir = export_for_serving(result.model, feature_set, out_dir, settings)
    tracking.log_artifact(settings, run_id, export_dir, "saved_model")
    return export_dir


def code_version(settings: Settings) -> str:
    """What produced the model besides the data: package, feature code and training config."""
    config = json.dumps(asdict(train_config(settings)), sort_keys=True)
    return f"railyard-{__version__}+features-{FEATURE_CODE_VERSION}+config-{hashlib.sha256(config.encode()).hexdigest()[:10]}"
