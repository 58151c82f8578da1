"""Defaults shared by every Railyard task."""

from functools import partial

from prefect import task
from prefect.cache_policies import NO_CACHE

from railyard.runtime import quiet_tensorflow

# Every flow run imports this before TensorFlow, in a process a Prefect worker started too.
quiet_tensorflow()

# Inputs are data frames and models: hashing them for Prefect's cache would cost more than the
# work, and a retraining run must never be skipped by a cache hit.
railyard_task = partial(task, cache_policy=NO_CACHE, persist_result=False)

MINUTES = 60
