"""A model kind: what a team writes to bring its own model to Railyard.

Railyard's pipeline (data validation, point-in-time features, the gate, the model store,
serving, smoke tests, review, the gray release, the ranking service, the streaming path and the
replay parity check) is the product; the network is yours. ``RAILYARD_MODEL_KIND`` names the
kind a run trains: a registered name (``railyard/kinds/registry.py``: ``fresh_wd``, the
default, or ``neural_cf``) or ``package.module:object``. In the spirit of TFX's ``run_fn``, a kind is a small
object with the members below; everything else works for any kind through them, unchanged.

**Resolving ``package.module:object``.** Railyard imports ``package.module`` with the process's
own ``sys.path`` (the working directory and ``PYTHONPATH``: on a Prefect worker, the worker's),
then follows ``object`` (dots allowed: ``module:Outer.KIND``). The object is the kind; a class
is instantiated once with no arguments. The kind is checked when it is loaded, before any data
is read: a name that does not resolve or an object missing a member is refused (exit 2).

**Members** (the methods are called once per training run, in this order, in the training process):

``name: str``
    Lower-case letters, digits and ``_`` (``neural_cf``). It names the kind's settings
    (``RAILYARD_<NAME>_*``) and appears in the version's code fingerprint, MLflow parameters,
    lineage tags, the review request and ``railyard status``.

``Config``
    The kind's own typed settings: a subclass of ``KindConfig`` (pydantic-settings) with a
    default for every field. Railyard reads it from the environment and ``.env`` with the prefix
    ``RAILYARD_<NAME>_`` (``embedding_dim`` of ``neural_cf`` is ``RAILYARD_NEURAL_CF_EMBEDDING_DIM``);
    a bad value is refused naming its variable. Values are plain JSON (numbers, strings, lists):
    they go into the fingerprint and MLflow. What every kind's training loop needs (epochs,
    batch size, learning rate, seed, early-stopping patience, the validation window) stays in
    Railyard's settings and reaches the kind as ``context.train``.

``reads: tuple[str, ...]``
    The declared aggregates the network reads (``railyard.model_input.layout``: ``user_n``,
    ``user_genre_pos``, ``movie_genres``, ...). Checked against the declarations when the kind is
    loaded: an unknown name is refused before training. Read them with ``context.select``.

``build(context, config) -> keras.Model``
    Called after Railyard seeded Keras (``context.train.seed``). Build the network over the
    standard inputs ``context.inputs()`` (a dict of Keras Inputs: ``userId`` and ``movieId``,
    int64 scalars per row; ``user_features`` and ``movie_features``, float32 vectors of the
    declared layout) and return an uncompiled ``keras.Model`` taking that whole dict (inputs it
    does not use included) and returning one probability of a positive rating per row (float32
    [N, 1], e.g. a sigmoid). Every transformation (smoothing, rates, vocabularies) belongs inside
    the model: it is exported.
    ``context`` gives the id vocabularies (``user_ids``, ``movie_ids``: the fit rows' ids),
    the training priors (``priors["mean"]``, ``priors["pos"]``, for ``features.smoothed``), the
    layout and the training settings. Layers of your own must be defined so that Keras can trace
    them (no Python side effects in ``call``).

Optional members (Railyard's defaults in brackets):

``output: str`` [``"score"``]
    The name of the one output of both served signatures (below).

``optimizer(context, config) -> keras.optimizers.Optimizer`` [Adam at ``context.train.learning_rate``]
    Railyard compiles the model with it, binary cross-entropy and the metrics ``auc`` and
    ``accuracy``, which early stopping and the per-epoch MLflow metrics read.

``fit(model, data, context, config) -> dict[str, list[float]]`` [``railyard.training.keras_fit``]
    Train the compiled model in place and return the per-epoch history (Keras' ``History.history``;
    ``val_auc``, when present, picks the best epoch that is reported). ``data.train`` is a
    ``tf.data`` dataset of (inputs, label) batches of the fit rows, shuffled again each epoch;
    ``data.validation`` the validation window; ``data.callbacks`` Railyard's callbacks (per-epoch
    MLflow metrics) to pass to Keras. The default is ``model.fit`` for up to ``epochs`` with early
    stopping on the validation window's AUC (``patience``), best weights restored. Early stopping
    and any selection a kind makes use the validation window, never the holdout.

``Config.refit: bool`` [``False``]
    With ``True``, once the kind's fit is done (with early stopping, the best epoch's weights),
    Railyard makes one more pass over the validation window, shuffled, with ``model.fit``: the
    newest ratings before the cut-off are often the most telling ones.

``warm_start(model, previous, context, config) -> dict[str, int] | None`` [none: always from scratch]
    Start ``model`` (freshly built and compiled, over vocabularies that are the previous
    version's ids and the new fit rows' ids) from ``previous``: the production version's
    trained weights (``Previous.weights``, by variable path) and its vocabularies. Usually one
    line: ``previous.carry(model, context, id_tables={"user_embedding/embeddings": "user"})``
    copies every weight and, in tables indexed by a vocabulary, the rows of ids both versions
    know (new ids keep their fresh initial rows) and returns figures (rows carried and new per
    entity), logged to MLflow as ``kind_warm_<figure>``. A kind without it is trained from scratch
    every run (``RAILYARD_TRAINING_START``, ``railyard.warm_start``).

``metrics(model, context, config) -> dict[str, float]`` [the trainable parameters]
    Figures the kind reports about its trained network, logged to MLflow as ``kind_<figure>``.

**What a version serves** (written by ``railyard.export``, for every kind): a SavedModel with two
signatures, each returning ``{output: float32 [N, 1]}``:
``serving_default(userId, movieId)`` (int64 [N]: the declared vectors are looked up in the
snapshot frozen at the training cut-off, zeros for unknown ids) and
``features(userId, movieId, user_features, movie_features)`` (the fresh vectors the online store
reads). The version holds its contract (kind, inputs and dtypes, output) in
``assets.extra/railyard_contract.json`` beside its golden requests and their offline answers;
the smoke tests, the serving client, scoring and the ranking service read the output from there
or take a signature's only output. The example request and the curl line are Railyard's (ids).

**The fingerprint**: a version's ``code_version`` (``railyard.training.code_version``) is the
Railyard version, the feature code version, the kind's name and a digest of the training
settings, the kind's config, ``reads``, ``output`` and the source of the module that defines the
kind object; the same data and code give the same stored version (nothing new to release).

**A kind in a few lines** (``RAILYARD_MODEL_KIND=my_team.kinds:KIND``; tests/e2e/test_model_kinds.py
takes one through the whole release)::

    class RatesConfig(KindConfig):
        learning_rate: float = 0.05  # RAILYARD_RATES_LEARNING_RATE

    class Rates:
        name, Config, output = "rates", RatesConfig, "probability"
        reads = ("user_n", "user_positives", "movie_n", "movie_positives")

        def build(self, context, config):
            import keras
            inputs = context.inputs()
            x = keras.ops.concatenate([context.select(inputs, name) for name in self.reads], axis=1)
            return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(keras.ops.log1p(x)))

        def optimizer(self, context, config):
            import keras
            return keras.optimizers.Adam(config.learning_rate)

    KIND = Rates()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict

from railyard.configs import TrainConfig

DEFAULT_OUTPUT = "score"


class KindConfig(BaseSettings):
    """The base of a kind's own settings (``Config``): every field has a default; Railyard reads
    the environment with the prefix ``RAILYARD_<NAME>_``."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True)


@dataclass(frozen=True, eq=False)
class KindContext:
    """What Railyard knows when a kind builds its network."""

    user_ids: np.ndarray  # sorted distinct ids of the fit rows (int64): the user vocabulary
    movie_ids: np.ndarray
    priors: dict[str, float]  # "mean" rating and "pos" (positive rate) of the training rows
    layout: dict[str, dict[str, slice]]  # entity ("user", "movie") -> aggregate -> positions in its vector
    widths: dict[str, int]  # entity -> its vector's width
    train: TrainConfig

    def inputs(self) -> dict[str, Any]:
        """The standard inputs as Keras Inputs, named as the signatures name them."""
        import keras

        return {
            "userId": keras.Input(shape=(), dtype="int64", name="userId"),
            "movieId": keras.Input(shape=(), dtype="int64", name="movieId"),
            "user_features": keras.Input(shape=(self.widths["user"],), dtype="float32", name="user_features"),
            "movie_features": keras.Input(shape=(self.widths["movie"],), dtype="float32", name="movie_features"),
        }

    def select(self, inputs: dict[str, Any], name: str):
        """The declared aggregate ``name`` of a batch: its columns of the entity's vector [N, width]."""
        for entity, positions in self.layout.items():
            if name in positions:
                return inputs[f"{entity}_features"][:, positions[name]]
        raise KeyError(f"no declared aggregate {name!r}")


@dataclass(frozen=True, eq=False)
class FitData:
    """What a kind's ``fit`` trains on."""

    train: Any  # tf.data.Dataset of (inputs, label [N, 1]) batches of the fit rows
    validation: Any  # the validation window, the same way
    train_rows: int
    validation_rows: int
    callbacks: list = field(default_factory=list)  # Railyard's Keras callbacks: pass them to model.fit


class WarmStartMismatch(ValueError):
    """The previous version's weights do not fit the network being warm-started."""


@dataclass(frozen=True, eq=False)
class Previous:
    """The version a run warm-starts from: its trained weights by variable path and the id
    vocabularies its tables were indexed by."""

    version: int
    weights: dict[str, np.ndarray]
    user_ids: np.ndarray  # sorted, as ``KindContext.user_ids`` was when it was trained
    movie_ids: np.ndarray

    def carry(self, model, context: KindContext, id_tables: Mapping[str, str]) -> dict[str, int]:
        """Set every trainable weight of ``model`` to the previous one of the same path. A table
        in ``id_tables`` (variable path -> "user" or "movie") has one row per vocabulary id after
        its out-of-vocabulary rows: those rows and the rows of ids both vocabularies hold are
        carried, new ids keep the rows the network was built with. How many rows were carried
        and how many are new, per entity."""
        figures: dict[str, int] = {}
        for variable in model.trainable_weights:
            old = self.weights.get(variable.path)
            if old is None:
                raise WarmStartMismatch(f"version {self.version} has no weight {variable.path!r}")
            entity = id_tables.get(variable.path)
            if entity is None:
                if old.shape != tuple(variable.shape):
                    raise WarmStartMismatch(
                        f"weight {variable.path!r}: {tuple(variable.shape)} now, {old.shape} in version {self.version}"
                    )
                variable.assign(old)
                continue
            new_ids, old_ids = _vocabulary(context, entity), _vocabulary(self, entity)
            oov = variable.shape[0] - len(new_ids)
            if oov < 0 or old.shape != (len(old_ids) + oov, *variable.shape[1:]):
                raise WarmStartMismatch(
                    f"table {variable.path!r} does not have one row per {entity} id after {oov} out-of-vocabulary rows"
                )
            table = np.array(variable.numpy())
            table[:oov] = old[:oov]
            place = np.minimum(np.searchsorted(old_ids, new_ids), max(len(old_ids) - 1, 0))
            known = np.flatnonzero(old_ids[place] == new_ids) if len(old_ids) else np.array([], np.intp)
            table[oov + known] = old[oov + place[known]]
            variable.assign(table)
            figures[f"{entity}_rows_carried"] = len(known)
            figures[f"{entity}_rows_new"] = len(new_ids) - len(known)
        return figures


def _vocabulary(holder, entity: str) -> np.ndarray:
    if entity not in ("user", "movie"):
        raise ValueError(f"an id table is indexed by user or movie ids, not {entity!r}")
    return holder.user_ids if entity == "user" else holder.movie_ids


class Kind(Protocol):
    """The members every kind has, for type checkers (the optional ones are documented above;
    ``registry.check_kind`` checks a kind when it is loaded)."""

    name: str
    Config: type[KindConfig]
    reads: tuple[str, ...]

    def build(self, context: KindContext, config: KindConfig) -> Any: ...
