"""An empty online store filled from a run's validated ratings in a process of its own, at the
lowest priority, while the run builds its features and trains; the run reads the skew check's
reports when it needs them (before its gate).

Filling a store is a one-time cost of a new home, but it was in the first run's critical path:
74 s of a 25M-rating day 0, against training that leaves about a sixth of two cores idle. The
child runs ``consistency.check_store`` as the run itself did, on the very rows the run validated
(written to the fill's folder: the data folder may have grown since), and writes its reports
there. Stopped (SIGTERM), it unwinds like any failed rebuild: the half-written namespace goes,
the store stays as it was.

    python -m infra.online_store.background_fill FOLDER SAMPLE_SIZE SEED   (``BackgroundFill.start``)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from infra.online_store.store import RebuildRunning, connect
from railyard import parquet_io
from railyard.errors import RailyardError
from railyard.skew import SkewReport

if TYPE_CHECKING:
    import polars as pl

NICENESS = 19  # the fill takes what the run leaves of the cores
RATINGS, MOVIES, REPORTS, LOG = "ratings.parquet", "movies.parquet", "skew.json", "fill.log"
RUNNING_REBUILD_POLL_S = 1.0  # another run is filling the store: measure it once that one is done


class BackgroundFillFailed(RailyardError):
    """The process filling the online store failed or did not end in time."""

    next_step = "read the fill's log named above, fix the cause and run again (the store was left as it was)"


@dataclass(frozen=True, eq=False)
class BackgroundFill:
    folder: Path
    process: subprocess.Popen

    @classmethod
    def start(
        cls, ratings: pl.DataFrame, movies: pl.DataFrame | None, folder: Path, sample_size: int, seed: int
    ) -> BackgroundFill:
        folder.mkdir(parents=True, exist_ok=True)
        parquet_io.write(ratings, folder / RATINGS, compression="lz4")
        if movies is not None:
            parquet_io.write(movies, folder / MOVIES, compression="lz4")
        with open(folder / LOG, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(folder), str(sample_size), str(seed)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(folder, process)

    def wait(self, timeout_s: float) -> tuple[bool, tuple[SkewReport, SkewReport]]:
        """Whether the child filled the store, and its two reports (``check_store``'s)."""
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise BackgroundFillFailed(
                f"the online store's fill did not end within {timeout_s:.0f} s and was stopped (log: {self.folder / LOG})"
            ) from None
        self._discard_copies()
        if code != 0:
            last = (self.folder / LOG).read_text(errors="replace").strip().splitlines()[-1:]
            raise BackgroundFillFailed(
                f"the online store's fill failed (exit {code}): {last[0] if last else 'no output'} "
                f"(log: {self.folder / LOG})"
            )
        found = json.loads((self.folder / REPORTS).read_text())
        reports = (SkewReport(**{**report, "examples": tuple(report["examples"])}) for report in found["reports"])
        return found["built"], tuple(reports)

    def stop(self, grace_s: float = 30.0) -> None:
        """End the child if it still runs: SIGTERM (its rebuild unwinds), then SIGKILL."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._discard_copies()

    def _discard_copies(self) -> None:
        """The rows handed to the child (25M ratings: 400 MB), kept no longer than it runs."""
        for name in (RATINGS, MOVIES):
            (self.folder / name).unlink(missing_ok=True)


def main(folder: Path, sample_size: int, seed: int) -> None:
    from infra.online_store.consistency import check_store
    from railyard.settings import Settings

    os.nice(NICENESS)
    # SystemExit unwinds ``OnlineStore.rebuilding``: the half-written namespace is dropped, the lock freed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    ratings = parquet_io.read(folder / RATINGS)
    movies = parquet_io.read(folder / MOVIES) if (folder / MOVIES).exists() else None
    store = connect(Settings())
    while True:
        try:
            built, reports = check_store(store, ratings, movies, sample_size, seed)
            break
        except RebuildRunning:
            time.sleep(RUNNING_REBUILD_POLL_S)
    found = {"built": built, "reports": [asdict(report) for report in reports]}
    (folder / f"{REPORTS}.tmp").write_text(json.dumps(found))
    (folder / f"{REPORTS}.tmp").replace(folder / REPORTS)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
