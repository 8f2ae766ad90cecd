"""Every environment variable mirrorsite/settings.py reads has its row in the manual's
settings table (docs/configuration.md, where operators look them up)."""

import re

from tests.support.mirror import PROJECT_ROOT


def test_every_setting_has_a_row_in_the_manual():
    settings_source = (PROJECT_ROOT / "mirrorsite" / "settings.py").read_text()
    names = set(re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]*)"', settings_source))
    assert {"MIRROR_DATA_DIR", "MIRROR_STORAGE", "MIRROR_AUTH", "MIRROR_AUDIT_RETENTION_DAYS"} <= names
    rows = [
        line for line in (PROJECT_ROOT / "docs" / "configuration.md").read_text().splitlines() if line.startswith("| `")
    ]
    documented = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1])}
    assert sorted(names - documented) == []
