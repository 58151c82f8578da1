"""A trained model as TF Serving gets it: the SavedModel and its contract, golden requests, warm-up
records, and the vocabularies a later warm start maps its tables by."""

from __future__ import annotations

from pathlib import Path

from infra.tfserving.warmup import write_warmup_requests
from railyard import export, warm_start
from railyard.features import FeatureSet
from railyard.training import TrainResult


def export_for_serving(
    trained: TrainResult, feature_set: FeatureSet, out_dir: Path, model_name: str, seed: int
) -> Path:
    """The SavedModel with its contract and golden requests (for the smoke tests) and warm-up requests."""
    export_dir = export.export_serving_model(
        trained.model, feature_set, out_dir, kind=trained.kind.name, output=trained.kind.output
    )
    instances = export.golden_instances(feature_set, seed=seed)
    export.write_golden_requests(export_dir, feature_set, instances)
    # TF Serving replays these while loading, so the first real request does not pay for warm-up.
    write_warmup_requests(export_dir, model_name, instances)
    warm_start.write_state(export_dir, trained.user_ids, trained.movie_ids)
    return export_dir
