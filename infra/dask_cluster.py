"""The Dask cluster a partitioned feature build runs on: the one ``RAILYARD_DASK_SCHEDULER``
names, or a ``LocalCluster`` of worker processes started for the run and stopped after it (each
with ``RAILYARD_DASK_WORKER_MEMORY``, spilling to disk under ``$RAILYARD_HOME/dask`` first)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from railyard.settings import Settings


@contextmanager
def dask_client(settings: Settings) -> Iterator:
    """A ``distributed.Client`` for the run, closed (and a local cluster stopped) afterwards."""
    from distributed import Client, LocalCluster

    if settings.dask_scheduler:
        with Client(settings.dask_scheduler) as client:
            yield client
        return
    spill = settings.home / "dask"
    spill.mkdir(parents=True, exist_ok=True)
    with (
        LocalCluster(
            n_workers=settings.dask_workers,
            threads_per_worker=1,  # the feature code uses the worker's cores itself (NumPy, Polars)
            processes=True,
            memory_limit=settings.dask_worker_memory,
            local_directory=str(spill),
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
