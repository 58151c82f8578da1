"""The Dask cluster a partitioned feature build runs on: the one ``RAILYARD_DASK_SCHEDULER``
names, or a ``LocalCluster`` of worker processes started for the run and stopped after it (each
with ``RAILYARD_DASK_WORKER_MEMORY``, spilling to disk under ``$RAILYARD_HOME/dask`` first)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from railyard.settings import Settings

log = logging.getLogger("railyard.dask")


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
            dashboard_address="127.0.0.1:0",  # loopback, any free port: two runs on one machine both get one
        ) as cluster,
        Client(cluster) as client,
    ):
        log.info("the run's Dask cluster: %d workers, dashboard %s", settings.dask_workers, client.dashboard_link)
        yield client
