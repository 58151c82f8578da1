"""Keras layers more than one kind uses, defined lazily so importing a kind does not import Keras."""

from __future__ import annotations

import functools


@functools.cache
def id_dropout():
    """``IdDropout(rate, seed)``: in training, sends a share of looked-up ids to the OOV index 0,
    so the OOV row (what every id unknown at training time gets) is trained, not left at its init."""
    import keras
    from keras import ops

    class IdDropout(keras.layers.Layer):
        def __init__(self, rate: float, seed: int, **kwargs):
            super().__init__(**kwargs)
            self.rate = rate
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, index, training=None):
            if not training or self.rate <= 0:
                return index
            drop = keras.random.uniform(ops.shape(index), seed=self.seed_generator) < self.rate
            return ops.where(drop, ops.zeros_like(index), index)

    return IdDropout


def logit(probability):
    """log(p / (1 - p)), clipped away from 0 and 1."""
    from keras import ops

    clipped = ops.clip(probability, 1e-6, 1 - 1e-6)
    return ops.log(clipped) - ops.log1p(-clipped)
