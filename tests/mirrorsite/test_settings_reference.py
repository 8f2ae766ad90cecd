"""The manual's settings table (docs/configuration.md) is the one the schema generates, and
nothing reads the environment but the schema's loader: every variable read is documented."""

import re

from mirrorsite.config import reference
from mirrorsite.config.loader import fields
from tests.support.mirror import PROJECT_ROOT

# The code of the mirror (not its tests, benchmarks or migrations).
SOURCE_DIRS = ("mirrorsite", "registry", "access", "audit", "dashboard")
READS_THE_ENVIRONMENT = re.compile(r"os\.environ|os\.getenv|getenv\(|import environ|from environ|\benv\.\w+\(")
# Lines that may: the schema's loader, Django's settings module being chosen, and the upstreams
# file's `password_env` (a variable its author names, documented with the file's format).
ALLOWED = (
    (re.compile(r"mirrorsite/config/loader\.py$"), re.compile(r".")),
    (re.compile(r".*"), re.compile(r'os\.environ\.setdefault\("DJANGO_SETTINGS_MODULE"')),
    (re.compile(r"registry/upstreams/configfile\.py$"), re.compile(r"os\.environ")),
)


def test_the_manual_shows_the_table_the_schema_generates():
    page = reference.PAGE.read_text()
    assert reference.page_with_table(page) == page, (
        "docs/configuration.md's settings table differs from mirrorsite/config/schema.py: "
        "run `python -m mirrorsite.config --write-docs`"
    )


def test_every_setting_has_one_row():
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", reference.table(), re.MULTILINE)
    names = [field.name for field, _kind, _declared in fields()]
    assert rows == names and len(set(names)) == len(names)
    assert {"MIRROR_DATA_DIR", "MIRROR_STORAGE", "MIRROR_AUTH", "MIRROR_WEB_WORKERS", "DATABASE_URL"} <= set(names)
    assert all(declared.description for _field, _kind, declared in fields())


def test_nothing_reads_the_environment_but_the_schema():
    readers = []
    paths = [PROJECT_ROOT / "manage.py"]
    for directory in SOURCE_DIRS:
        paths += sorted((PROJECT_ROOT / directory).rglob("*.py"))
    for path in paths:
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#") or not READS_THE_ENVIRONMENT.search(line):
                continue
            if not any(where.search(relative) and what.search(line) for where, what in ALLOWED):
                readers.append(f"{relative}:{number}: {line.strip()}")
    assert readers == [], "declare these settings in mirrorsite/config/schema.py and read them from there"


def test_the_reading_check_catches_a_reader():
    assert READS_THE_ENVIRONMENT.search('X = env.int("MIRROR_X", default=1)')
    assert READS_THE_ENVIRONMENT.search('os.environ.get("MIRROR_X", "1")')
