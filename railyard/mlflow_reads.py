"""The reads `railyard status` makes of MLflow, without importing MLflow when it need not.

Importing MLflow 3.17 and building its SQLAlchemy stores costs about 1.8 s of CPU (its
``__init__`` imports pandas, its data and GenAI modules), most of `railyard status`. On a SQLite
tracking database whose schema is the one these queries were written against (``SCHEMA``, MLflow's
Alembic revision, checked on every open), the same reads are answered with ``sqlite3`` from the
live database: nothing is cached, so they cannot tell an older story than MLflow would. Anything
else (another revision, PostgreSQL or an HTTP tracking server, workspaces switched on, a database
not created yet) is read through ``MlflowClient``, as is every write.
``tests/unit/test_mlflow_reads.py`` checks that both answer the same on one real database, and
that ``SCHEMA`` is the revision the installed MLflow creates.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Protocol

SCHEMA = "dc11669786a5"  # MLflow 3.17's Alembic head
_WORKSPACE = "default"  # the registry's only workspace while MLflow's workspaces are off
_DELETED = "Deleted_Internal"  # a deleted model version's stage, which MLflow's searches skip


class MlflowReads(Protocol):
    def model_versions(self, model: str) -> list[tuple[int, str | None, dict[str, str]]]:
        """Every version of ``model``: its number, the run behind it, its tags."""

    def aliases(self, model: str) -> dict[str, int | str]:
        """The registered model's aliases (alias → version, as MLflow gives it: an int from a
        SQL database, a string over HTTP); none before it exists."""

    def known_runs(self, run_ids: Collection[str]) -> set[str]:
        """The run ids MLflow knows (a lost or replaced tracking database knows none)."""

    def run_metrics(self, run_id: str) -> dict[str, float]:
        """A run's latest metrics (MLflow's error when it has no such run)."""

    def runs(self, experiment: str, *, running: bool = False, limit: int | None = None) -> list[dict]:
        """The experiment's active runs, newest first (only those RUNNING with ``running``):
        each ``{"run_id", "name", "tags"}``; none when there is no such experiment."""


def open_reads(tracking_uri: str, client: Callable[[], object]) -> MlflowReads:
    """Reads of the SQLite database itself when its schema is ``SCHEMA``, else through
    ``client()`` (called only when a read needs it)."""
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    enabled = os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() in ("1", "true", "yes")
    if tracking_uri.startswith("sqlite:///") and "?" not in tracking_uri and not enabled and database.is_file():
        connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.DatabaseError as error:
            connection.close()
            if "locked" in str(error):
                raise  # what MLflow would meet too: the CLI names the lock
            revision = None
        if revision == [(SCHEMA,)]:
            return SqliteReads(connection, ClientReads(client))
        connection.close()
    return ClientReads(client)


class SqliteReads:
    """MLflow's queries for these reads (sqlalchemy_store.py of its registry and tracking stores),
    on the database file, read-only; MLflow's own error where a read finds nothing to read."""

    def __init__(self, connection: sqlite3.Connection, client: ClientReads):
        self.connection, self.client = connection, client

    def model_versions(self, model: str) -> list[tuple[int, str | None, dict[str, str]]]:
        rows = self.connection.execute(
            "SELECT version, run_id FROM model_versions WHERE name = ? AND workspace = ? AND current_stage != ?",
            (model, _WORKSPACE, _DELETED),
        ).fetchall()
        tags: dict[int, dict[str, str]] = {version: {} for version, _ in rows}
        for version, key, value in self.connection.execute(
            "SELECT version, key, value FROM model_version_tags WHERE name = ? AND workspace = ?", (model, _WORKSPACE)
        ):
            tags.get(version, {})[key] = value
        return [(int(version), run_id, tags[version]) for version, run_id in rows]

    def aliases(self, model: str) -> dict[str, int | str]:
        rows = self.connection.execute(
            "SELECT alias, version FROM registered_model_aliases WHERE name = ? AND workspace = ?", (model, _WORKSPACE)
        )
        return dict(rows.fetchall())

    def known_runs(self, run_ids: Collection[str]) -> set[str]:
        wanted = sorted(set(run_ids))
        marks = ", ".join("?" * len(wanted))
        return {
            row[0] for row in self.connection.execute(f"SELECT run_uuid FROM runs WHERE run_uuid IN ({marks})", wanted)
        }

    def run_metrics(self, run_id: str) -> dict[str, float]:
        if not self.known_runs([run_id]):
            return self.client.run_metrics(run_id)
        rows = self.connection.execute("SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (run_id,))
        return {key: float("nan") if is_nan else value for key, value, is_nan in rows}

    def runs(self, experiment: str, *, running: bool = False, limit: int | None = None) -> list[dict]:
        found = self.connection.execute(
            "SELECT experiment_id FROM experiments WHERE name = ?", (experiment,)
        ).fetchone()
        if found is None:
            return []
        status = " AND status = 'RUNNING'" if running else ""
        rows = self.connection.execute(
            f"SELECT run_uuid, name FROM runs WHERE experiment_id = ? AND lifecycle_stage = 'active'{status} "
            "ORDER BY start_time DESC, run_uuid LIMIT ?",
            (found[0], -1 if limit is None else limit),
        ).fetchall()
        result = []
        for run_id, name in rows:
            tags = dict(self.connection.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
            result.append({"run_id": run_id, "name": name or tags.get("mlflow.runName"), "tags": tags})
        return result


class ClientReads:
    """The same reads through ``MlflowClient`` (created on the first read)."""

    def __init__(self, client: Callable[[], object]):
        self._client = client

    def model_versions(self, model: str) -> list[tuple[int, str | None, dict[str, str]]]:
        found = self._client().search_model_versions(f"name = '{model}'")
        return [(int(v.version), v.run_id, dict(v.tags)) for v in found]

    def aliases(self, model: str) -> dict[str, int | str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self._client().get_registered_model(model).aliases)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            return {}

    def known_runs(self, run_ids: Collection[str]) -> set[str]:
        from mlflow.exceptions import MlflowException

        known = set()
        for run_id in set(run_ids):
            try:
                self._client().get_run(run_id)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            else:
                known.add(run_id)
        return known

    def run_metrics(self, run_id: str) -> dict[str, float]:
        return dict(self._client().get_run(run_id).data.metrics)

    def runs(self, experiment: str, *, running: bool = False, limit: int | None = None) -> list[dict]:
        from mlflow.entities import ViewType

        client = self._client()
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return []
        runs = client.search_runs(
            [found.experiment_id],
            "attributes.status = 'RUNNING'" if running else "",
            run_view_type=ViewType.ACTIVE_ONLY,
            order_by=["attributes.start_time DESC"],
            **({} if limit is None else {"max_results": limit}),
        )
        return [{"run_id": r.info.run_id, "name": r.info.run_name, "tags": dict(r.data.tags)} for r in runs]
