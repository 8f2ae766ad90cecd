"""The databases of the mirror processes tests start.

The suite runs twice (`make test`): on SQLite, then with DATABASE_URL naming a PostgreSQL
server. On the SQLite pass a process keeps its file in its data directory; on the PostgreSQL
pass it gets a database of its own on that server, created fresh before its first start and
dropped at the end of the test session. Either way the database belongs to the data
directory, so a process restarted on the same directory finds what it stored, and replicas
sharing a directory share the database; processes with directories of their own share one
by being given the same ProcessDatabase.

`python -m tests.support.databases URL` checks that the server of URL answers (make test asks
before it starts).
"""

from __future__ import annotations

from datetime import UTC, datetime
import hashlib
import os
from pathlib import Path
import sqlite3
import sys
import threading
from urllib.parse import urlsplit, urlunsplit

MAX_NAME = 63  # PostgreSQL's identifier limit


def session_database_url() -> str:
    """The database this test run uses ("" or a sqlite URL: the SQLite pass)."""
    return os.environ.get("DATABASE_URL", "")


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme in ("postgres", "postgresql", "pgsql", "postgis")


def with_database_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


def _connect(url: str, **options):
    import psycopg

    return psycopg.connect(url, connect_timeout=5, **options)


# The PostgreSQL server of tests that need one on either pass (a scaled deployment's database).
LOCAL_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/mirrorsite"


def postgres_session_url(name: str) -> str:
    """A session URL whose databases are named `name`_…: on the session's server on the
    PostgreSQL pass, else on MIRROR_TEST_POSTGRES_URL's server (`make test`), else the local one."""
    candidates = (session_database_url(), os.environ.get("MIRROR_TEST_POSTGRES_URL", ""))
    server = next((url for url in candidates if is_postgres(url)), LOCAL_POSTGRES_URL)
    return with_database_name(server, name)


def check_server(url: str) -> str | None:
    """Why the PostgreSQL server of `url` cannot be used, or None when it answers."""
    import psycopg

    try:
        with _connect(with_database_name(url, "postgres")) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        return str(error).strip() or type(error).__name__
    return None


class ProcessDatabase:
    """One database for the mirror processes of a data directory (or of several)."""

    def __init__(self, data_dir: Path, session_url: str | None = None):
        """`session_url`: whose server and name prefix to use (default: this pass's DATABASE_URL)."""
        self.session_url = session_database_url() if session_url is None else session_url
        self.postgres = is_postgres(self.session_url)
        if self.postgres:
            base = urlsplit(self.session_url).path.lstrip("/") or "mirrorsite"
            suffix = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
            self.name = f"{base[: MAX_NAME - len(suffix) - 1]}_{suffix}"
            self.url = with_database_name(self.session_url, self.name)
        else:
            self.path = Path(data_dir) / "db.sqlite3"
            self.name = str(self.path)
            self.url = f"sqlite:///{self.path.resolve()}"

    def env(self) -> dict[str, str]:
        """What a process of the mirror needs in its environment to use this database."""
        return {"DATABASE_URL": self.url}

    def create(self) -> ProcessDatabase:
        """A fresh database, made once (a restart keeps what is stored)."""
        if self.postgres:
            _created.create(self)
        return self

    def drop(self) -> None:
        if self.postgres:
            _created.drop(self)

    def query(self, sql: str, *params) -> list[tuple]:
        """Run SQL (`?` placeholders) in the database, committed; the rows it returns."""
        if not self.postgres:
            with sqlite3.connect(self.path, timeout=10) as db:
                return db.execute(sql, [_sqlite_value(p) for p in params]).fetchall()
        with _connect(self.url, autocommit=True) as connection:
            cursor = connection.execute(sql.replace("?", "%s"), params) if params else connection.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def dump(self) -> bytes:
        """Everything stored, as bytes (to look for what must never be stored in clear)."""
        if not self.postgres:
            return b"".join(path.read_bytes() for path in sorted(self.path.parent.glob(f"{self.path.name}*")))
        chunks = []
        with _connect(self.url, autocommit=True) as connection:
            tables = connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            ).fetchall()
            cursor = connection.cursor()
            for (table,) in tables:
                with cursor.copy(f'COPY "{table}" TO STDOUT') as copy:
                    chunks.extend(bytes(block) for block in copy)
        return b"".join(chunks)


def _sqlite_value(value):
    """Datetimes as Django stores them in SQLite: UTC, no offset."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")
    return value


class _CreatedDatabases:
    """PostgreSQL databases this process created, so each is made once and all are dropped."""

    def __init__(self) -> None:
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def create(self, database: ProcessDatabase) -> None:
        with self._lock:
            if database.name in self._urls:
                return
            with _connect(with_database_name(database.session_url, "postgres"), autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
                connection.execute(f'CREATE DATABASE "{database.name}"')
            self._urls[database.name] = database.session_url

    def drop(self, database: ProcessDatabase) -> None:
        with self._lock:
            session_url = self._urls.pop(database.name, None)
        if session_url is not None:
            _drop(session_url, database.name)

    def drop_all(self) -> None:
        with self._lock:
            created, self._urls = self._urls, {}
        for name, session_url in created.items():
            _drop(session_url, name)


def _drop(session_url: str, name: str) -> None:
    with _connect(with_database_name(session_url, "postgres"), autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_created = _CreatedDatabases()


def drop_created_databases() -> None:
    """Drop every database the processes of this run were given."""
    _created.drop_all()


if __name__ == "__main__":
    problem = check_server(sys.argv[1])
    if problem:
        print(f"PostgreSQL at {sys.argv[1]} does not answer: {problem}", file=sys.stderr)
        sys.exit(1)
