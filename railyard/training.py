"""Training any model kind: the validation window, the kind's network, Railyard's loop, the fingerprint.

``train_model`` carves the validation window from the end of the training period
(``model_input.carve_validation``), builds the kind's network (``railyard.kinds.base``),
compiles it, warm-starts it from the previous version when asked (``WarmStart``: the kind's
``warm_start`` over the rows since that version's cut-off and a replay sample) and fits it: with
the kind's own ``fit`` when it has one, else ``keras_fit`` (early stopping on the validation
window's AUC), then, for a kind with ``refit``, one more pass over the validation window. The
holdout is never read here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from railyard import __version__, model_input
from railyard import features as F
from railyard.configs import TrainConfig
from railyard.kinds.base import FitData, KindContext, Previous
from railyard.kinds.registry import LoadedKind
from railyard.locations import Location

STEPS_PER_EXECUTION = 16
VALIDATION_BATCH = 8192


@dataclass
class TrainResult:
    model: object  # keras.Model (typed loosely: keras is imported lazily)
    kind: LoadedKind
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    train_rows: int = 0  # the fit rows
    validation_rows: int = 0
    validation_from: int = 0  # the first timestamp of the validation window
    figures: dict[str, float] = field(default_factory=dict)  # what the kind reports about its network
    # The id vocabularies the network was built over: a later warm start maps its tables by them.
    user_ids: np.ndarray = field(default_factory=lambda: np.array([], np.int64))
    movie_ids: np.ndarray = field(default_factory=lambda: np.array([], np.int64))


@dataclass(frozen=True)
class WarmStart:
    """Start from ``previous`` (the production version) and train on ``rows`` of the training split."""

    previous: Previous
    rows: model_input.Warm


def code_version(config: TrainConfig, kind: LoadedKind) -> str:
    """What produced a model besides the data: Railyard, the feature code, the kind, the training
    settings, the kind's settings, what it reads and serves, and its module's source."""
    digest = _digest({"train": asdict(config), **_kind_identity(kind)})
    return f"railyard-{__version__}+features-{F.FEATURE_CODE_VERSION}+{kind.name}-{digest}"


def kind_fingerprint(kind: LoadedKind) -> str:
    """The kind's part of ``code_version`` (not the training loop's settings): a warm start needs
    the same network, while epochs or the learning rate may differ from run to run."""
    return f"{kind.name}-{_digest(_kind_identity(kind))}"


def _kind_identity(kind: LoadedKind) -> dict:
    return {
        "kind": kind.name,
        "settings": kind.settings(),
        "reads": list(kind.kind.reads),
        "output": kind.output,
        "source": hashlib.sha256(kind.source().encode()).hexdigest(),
    }


def _digest(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


def context_for(
    windows: model_input.Windows, priors: dict[str, float], config: TrainConfig, previous: Previous | None = None
) -> KindContext:
    """What the kind builds over; a warm start's vocabularies also keep the previous version's ids."""
    layout = {entity: model_input.layout(entity) for entity in model_input.VECTORS}
    user_ids, movie_ids = windows.user_ids, windows.movie_ids
    if previous is not None:
        user_ids, movie_ids = np.union1d(user_ids, previous.user_ids), np.union1d(movie_ids, previous.movie_ids)
    return KindContext(
        user_ids=user_ids,
        movie_ids=movie_ids,
        priors=priors,
        layout=layout,
        widths={entity: max(where.stop for where in positions.values()) for entity, positions in layout.items()},
        train=config,
    )


def new_model(feature_dir: Location | Path | str, config: TrainConfig, kind: LoadedKind, warm: WarmStart | None = None):
    """A freshly seeded, compiled network of ``kind`` for a feature folder (with ``warm``: started
    from the previous version's weights), the validation window it is fit beside, the context it
    was built in and what the warm start reported."""
    import keras

    feature_dir = Location.of(feature_dir)
    train_dir = feature_dir / "train" if warm is None else model_input.warm_rows(feature_dir, warm.rows)
    windows = model_input.carve_validation(train_dir, config.validation_fraction)
    previous = warm.previous if warm is not None else None
    context = context_for(windows, F.read_priors(feature_dir), config, previous)
    keras.utils.set_random_seed(config.seed)
    model = kind.kind.build(context, kind.config)
    check_network(model, kind)
    optimizer = getattr(kind.kind, "optimizer", None)
    model.compile(
        optimizer=optimizer(context, kind.config) if optimizer else keras.optimizers.Adam(config.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
        # Steps are small (batches of about 1k): one Python call per step cost a fifth of training's
        # CPU time at 1M ratings. Epoch-end callbacks (early stopping, MLflow) are not affected.
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    started = kind.kind.warm_start(model, previous, context, kind.config) if previous is not None else None
    return model, windows, context, {f"warm_{name}": value for name, value in (started or {}).items()}


class BadNetwork(ValueError):
    """A kind's ``build`` returned something Railyard cannot train and serve."""


def check_network(model, kind: LoadedKind) -> None:
    """One output, [N, 1] per row, over the standard inputs (all four, used or not)."""
    import keras

    if not isinstance(model, keras.Model):
        raise BadNetwork(f"kind {kind.name!r}: build returned {type(model).__name__}, not a keras.Model")
    if len(model.outputs) != 1 or tuple(model.outputs[0].shape[1:]) != (1,):
        shapes = [tuple(output.shape) for output in model.outputs]
        raise BadNetwork(f"kind {kind.name!r}: build must return one probability per row [N, 1], got {shapes}")
    names = sorted(tensor.name for tensor in model.inputs)
    if names != sorted(model_input.INPUT_NAMES):
        raise BadNetwork(
            f"kind {kind.name!r}: the network takes {names}; build it over context.inputs() "
            f"(all of {', '.join(model_input.INPUT_NAMES)})"
        )


def keras_fit(model, data: FitData, context: KindContext, config) -> dict[str, list[float]]:
    """Railyard's loop: ``model.fit`` for up to ``epochs``, early stopping on the validation
    window's AUC with the best epoch's weights restored."""
    import keras

    stop = keras.callbacks.EarlyStopping(
        monitor="val_auc", mode="max", patience=context.train.early_stopping_patience, restore_best_weights=True
    )
    history = model.fit(
        data.train,
        validation_data=data.validation,
        epochs=context.train.epochs,
        shuffle=False,  # the dataset shuffles row groups and rows itself
        callbacks=[stop, *data.callbacks],
        verbose=0,
    )
    return history.history


def train_model(
    feature_dir: Location | Path | str,
    config: TrainConfig,
    kind: LoadedKind,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    warm: WarmStart | None = None,
) -> TrainResult:
    """Fit ``kind``'s network on the training shards before the validation window, stopping on it
    (with ``warm``: started from the previous version, on the rows since its cut-off and a replay)."""
    import keras

    model, windows, context, started = new_model(feature_dir, config, kind, warm)
    callbacks = []
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch_end(epoch, {k: float(v) for k, v in logs.items()})
            )
        )
    damaged = []
    data = FitData(
        train=windows.fit_dataset(config.batch_size, config.seed, damaged),
        validation=windows.validation_dataset(VALIDATION_BATCH, damaged),
        train_rows=windows.fit_rows,
        validation_rows=windows.validation_rows,
        callbacks=callbacks,
    )
    fit = getattr(kind.kind, "fit", None) or keras_fit
    with _naming_damaged_shards(damaged):
        history = fit(model, data, context, kind.config)
    history = {key: [float(value) for value in values] for key, values in (history or {}).items()}
    best_epoch = int(np.argmax(history["val_auc"])) if history.get("val_auc") else len(history.get("loss", [1])) - 1
    if getattr(kind.config, "refit", False):
        with _naming_damaged_shards(damaged):
            fit_newest(model, windows, config, damaged)
    report = getattr(kind.kind, "metrics", None)
    figures = report(model, context, kind.config) if report else {"trainable_params": _trainable_params(model)}
    figures |= started
    return TrainResult(
        model=model,
        kind=kind,
        history=history,
        best_epoch=best_epoch,
        train_rows=windows.fit_rows,
        validation_rows=windows.validation_rows,
        validation_from=windows.validation_from,
        figures={name: float(value) for name, value in figures.items()},
        user_ids=context.user_ids,
        movie_ids=context.movie_ids,
    )


def fit_newest(model, windows: model_input.Windows, config: TrainConfig, damaged: list) -> None:
    """One more pass over the validation window (the newest training rows, shuffled), from the
    weights early stopping kept: the newest ratings before the cut-off are the most telling ones.
    (Training a fresh network on every row for the chosen epochs instead cost as much again as
    the fit: 230 s of a 25M run, for the same AUC: bench/README.md.) The holdout is never read."""
    newest = windows.validation_dataset(config.batch_size, damaged, seed=config.seed)
    model.fit(newest, epochs=1, shuffle=False, verbose=0)  # the dataset shuffles itself


@contextmanager
def _naming_damaged_shards(damaged: list):
    """A damaged shard's own error (naming it) instead of TensorFlow's wrapper of it."""
    try:
        yield
    except Exception:
        if damaged:
            raise damaged[0] from None
        raise


def _trainable_params(model) -> float:
    return float(sum(int(np.prod(weight.shape)) for weight in model.trainable_weights))


def predict_core(model, frame: pl.DataFrame, batch_size: int = 65536) -> np.ndarray:
    """Scores of a trained network for a feature frame (one score per row)."""
    return model.predict(model_input.feature_inputs(frame), batch_size=batch_size, verbose=0).reshape(-1)
