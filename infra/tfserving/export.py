"""A trained model as TF Serving gets it: the SavedModel, golden requests, warm-up records."""

from __future__ import annotations

from pathlib import Path

from infra.tfserving.warmup import write_warmup_requests
from railyard import model
from railyard.features import FeatureSet


def export_for_serving(trained_model, feature_set: FeatureSet, out_dir: Path, model_name: str, seed: int) -> Path:
    """The SavedModel with its golden requests (for the smoke tests) and warm-up requests."""
    export_dir = model.export_serving_model(trained_model, feature_set, out_dir)
    instances = model.golden_instances(feature_set, seed=seed)
    model.write_golden_requests(export_dir, feature_set, instances)
    # TF Serving replays these while loading, so the first real request does not pay for warm-up.
    write_warmup_requests(export_dir, model_name, instances)
    return export_dir
