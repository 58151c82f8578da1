"""``fresh_wd``: a wide & deep network over the fresh aggregates, for users who are mostly new.

Most users scored tomorrow were not in today's training data (on MovieLens releases, 83-85 % of
the holdout's ratings), so the signal is in the aggregates the online store keeps fresh, not in
user embeddings. The **wide** part is a logistic regression inside the model over smoothed
logits (the user's and the movie's positive rates, the user's affinity for the movie's genres),
the centred smoothed mean ratings, log counts and the user's latest rating; the **deep** part is
a small regularised MLP over the same features, the user's per-genre taste, the movie's genres
and their product, and a small user embedding whose unknown-id row is trained by sending half of
the ids to it. In training a share of rows is shown as a brand-new user (zero user aggregates,
the unknown id): what the ids-only signature shows for a user unknown at the cut-off. The score
is sigmoid(wide + deep). Every transformation is a layer, with the training priors frozen in.

After early stopping on the validation window, the kind makes one more pass over that window
(``refit``, Railyard's training loop): the newest ratings are the most telling ones. Settings: ``RAILYARD_FRESH_WD_*`` (``Config``).
"""

from __future__ import annotations

import math

from railyard import features as F
from railyard.kinds.base import KindConfig, KindContext, Previous
from railyard.kinds.layers import id_dropout, logit

_LOG_COUNT_SCALE = 5.0  # log1p(counts) reach ~5-10 on MovieLens; keep inputs near unit scale
# The wide part's starting weights: 1 on the user's and the movie's rate logits (the first two wide
# features), 0 on the other seven.
_WIDE_START = [[1.0], [1.0]] + [[0.0]] * 7


class FreshWideDeepConfig(KindConfig):
    hidden_units: tuple[int, ...] = (32, 16)  # the deep part
    dropout: float = 0.3  # after each hidden layer
    l2: float = 1e-4  # on the deep part's kernels and the user embedding table
    user_embedding_dim: int = 8  # 0: no user embedding
    user_id_dropout: float = 0.5  # share of training ids sent to the unknown-id row
    cold_user_rate: float = 0.1  # share of training rows shown as a brand-new user
    refit: bool = True  # after early stopping, one more pass over the validation window (the newest rows)


def _layers():
    """Custom layers, defined lazily so importing this module does not import Keras/TF."""
    import keras
    from keras import ops

    class FreshTransform(keras.layers.Layer):
        """Raw aggregates -> (wide features, deep features), with the training priors frozen in."""

        def __init__(self, prior_mean: float, prior_pos: float, **kwargs):
            super().__init__(**kwargs)
            self.prior_mean, self.prior_pos = prior_mean, prior_pos

        def get_config(self):
            return super().get_config() | {"prior_mean": self.prior_mean, "prior_pos": self.prior_pos}

        def call(self, raw):
            mean, pos = self.prior_mean, self.prior_pos
            user_n, movie_n = raw["user_n"], raw["movie_n"]
            user_rate = F.smoothed(raw["user_positives"], user_n, pos)
            movie_rate = F.smoothed(raw["movie_positives"], movie_n, pos)
            # A genre never rated says nothing new: its rate shrinks toward the user's own rate.
            genre_rate = F.smoothed(raw["user_genre_pos"], raw["user_genre_n"], user_rate)
            genres = raw["movie_genres"]
            listed = ops.sum(genres, axis=1, keepdims=True)
            affinity = ops.where(
                listed > 0, ops.sum(genre_rate * genres, axis=1, keepdims=True) / ops.maximum(listed, 1.0), user_rate
            )
            last = raw["user_last_rating"]
            has_last = ops.cast(last > 0, "float32")  # 0: no earlier rating (ratings start at 0.5)
            wide = ops.concatenate(
                [
                    logit(user_rate),
                    logit(movie_rate),
                    logit(affinity),
                    F.smoothed(raw["user_rating_sum"], user_n, mean) - mean,
                    F.smoothed(raw["movie_rating_sum"], movie_n, mean) - mean,
                    ops.log1p(user_n) / _LOG_COUNT_SCALE,
                    ops.log1p(movie_n) / _LOG_COUNT_SCALE,
                    has_last * (last - mean),
                    has_last,
                ],
                axis=1,
            )
            taste = logit(genre_rate) - logit(user_rate)
            return wide, ops.concatenate([wide, taste, genres, taste * genres], axis=1)

    class ColdUser(keras.layers.Layer):
        """In training, shows a share of rows their user as unknown: zero aggregates, the OOV id."""

        def __init__(self, rate: float, seed: int, **kwargs):
            super().__init__(**kwargs)
            self.rate = rate
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, user, index, training=None):
            if not training or self.rate <= 0:
                return user, index
            cold = keras.random.uniform(ops.shape(index), seed=self.seed_generator) < self.rate
            return ops.where(cold[:, None], ops.zeros_like(user), user), ops.where(cold, ops.zeros_like(index), index)

    return FreshTransform, ColdUser


class FreshWideDeep:
    name = "fresh_wd"
    Config = FreshWideDeepConfig
    reads = (
        "user_n",
        "user_rating_sum",
        "user_positives",
        "user_genre_n",
        "user_genre_pos",
        "user_last_rating",
        "movie_n",
        "movie_rating_sum",
        "movie_positives",
        "movie_genres",
    )

    def build(self, context: KindContext, config: FreshWideDeepConfig):
        import keras

        FreshTransform, ColdUser = _layers()
        seed, inputs = context.train.seed, context.inputs()
        index = keras.layers.IntegerLookup(
            vocabulary=context.user_ids, num_oov_indices=1, mask_token=None, name="user_lookup"
        )(inputs["userId"])
        user, index = ColdUser(config.cold_user_rate, seed + 3, name="cold_user")(inputs["user_features"], index)
        vectors = {"user_features": user, "movie_features": inputs["movie_features"]}
        raw = {name: context.select(vectors, name) for name in self.reads}
        wide, deep = FreshTransform(context.priors["mean"], context.priors["pos"], name="fresh_transform")(raw)

        regularizer = keras.regularizers.L2(config.l2)
        parts = [deep]
        if config.user_embedding_dim:
            dropped = id_dropout()(config.user_id_dropout, seed + 2, name="user_id_dropout")(index)
            parts.append(
                keras.layers.Embedding(
                    len(context.user_ids) + 1,
                    config.user_embedding_dim,
                    embeddings_regularizer=regularizer,
                    name="user_embedding",
                )(dropped)
            )
        x = keras.layers.Concatenate(name="deep_input")(parts) if len(parts) > 1 else deep
        for number, units in enumerate(config.hidden_units, start=1):
            x = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"deep_{number}")(x)
            if config.dropout:
                x = keras.layers.Dropout(config.dropout, seed=seed + number, name=f"deep_dropout_{number}")(x)
        # The network starts as the fresh baseline (user and movie rates combined as naive Bayes
        # does) and learns what it adds: on a small or short fit it stays near the baseline
        # instead of near random.
        deep_logit = keras.layers.Dense(
            1, kernel_initializer="zeros", kernel_regularizer=regularizer, name="deep_logit"
        )(x)
        wide_logit = keras.layers.Dense(
            1,
            kernel_initializer=keras.initializers.Constant(_WIDE_START),
            bias_initializer=keras.initializers.Constant(-_logit_of(context.priors["pos"])),
            name="wide_logit",
        )(wide)
        joined = keras.layers.Add(name="wide_and_deep")([wide_logit, deep_logit])
        score = keras.layers.Activation("sigmoid", name="score")(joined)
        return keras.Model(inputs=inputs, outputs=score, name="fresh_wd")

    def warm_start(
        self, model, previous: Previous, context: KindContext, config: FreshWideDeepConfig
    ) -> dict[str, int]:
        return previous.carry(model, context, id_tables={"user_embedding/embeddings": "user"})


def _logit_of(probability: float) -> float:
    return math.log(probability / (1 - probability))


KIND = FreshWideDeep()
