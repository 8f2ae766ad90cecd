"""The start-up work on the database (migrations, the MIRROR_UPSTREAMS file, the default
upstream), done by one process at a time.

Replicas started together (`docker compose up` with several web replicas, an upgrade rolled
out at once) would otherwise migrate together, and all but one would fail on a table another
just created. On PostgreSQL they queue on a session advisory lock; on SQLite on an flock of a
file beside the database, which every process sharing the database sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
import fcntl
from pathlib import Path

from django.db import connection

# Any number no other part of the mirror uses for an advisory lock: "mirr".
ADVISORY_LOCK_KEY = 0x6D697272


@contextmanager
def one_process_at_a_time() -> Iterator[None]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
    elif connection.vendor == "sqlite":
        database = Path(connection.settings_dict["NAME"])
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(f"{database.name}.start-lock"), "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes
            yield
    else:
        yield
