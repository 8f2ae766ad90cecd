"""The test process's own secret key on the PostgreSQL pass (loaded with `-p`, pyproject's addopts).

With DATABASE_URL naming PostgreSQL the settings see a deployment, which refuses to start
without DJANGO_SECRET_KEY; pytest-django loads the settings before any conftest runs, so the
key is set here, at plugin import.
"""
import os

from tests.support.databases import is_postgres, session_database_url

if is_postgres(session_database_url()):
    os.environ.setdefault("DJANGO_SECRET_KEY", "mirrorsite-test-process-only-" + "s" * 40)
