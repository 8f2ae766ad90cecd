"""What the fuzz tests of /v2/ check on every answer, and the snapshots they compare: the
files around the mirror's data directory and the rows of its database."""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path

from django.apps import apps
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from registry.api.responses import API_VERSION_HEADER

# Bounded: the fuzz tests together add well under a minute to the suite. No example database:
# nothing is written to the working tree, and every run starts from the same strategies.
BOUNDED = hypothesis_settings(
    max_examples=80,
    deadline=None,
    database=None,
    derandomize=False,
    # One mirror set-up serves every example; each example checks its own before and after.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every error the mirror answers, with its status (DESIGN: "The pull API the mirror serves").
ERROR_STATUS = {
    "NAME_INVALID": {400},
    "TAG_INVALID": {400},
    "DIGEST_INVALID": {400},
    "PAGINATION_NUMBER_INVALID": {400},
    "MANIFEST_UNKNOWN": {404},
    "BLOB_UNKNOWN": {404},
    "NAME_UNKNOWN": {404},
    "RANGE_INVALID": {416},
    "UNAUTHORIZED": {401},
    "DENIED": {403},
    "TOOMANYREQUESTS": {429},
    "UNSUPPORTED": {405},
    "MANIFEST_INVALID": {502},
    "UNAVAILABLE": {503},
}
# Input the mirror refuses itself (all its 400s, and 405 for writes), before any storage or
# network: such a request writes nothing.
REJECTED_STATUSES = {400, 405}


def check_answer(response) -> str | None:
    """Checks an answer is a well-formed registry answer; its error code (None for a success,
    "" for an error to a HEAD, which has no body to say which)."""
    assert response.status_code != 500, response.content[:500]
    assert response.status_code < 500 or response.status_code in (502, 503), response.status_code
    assert response[API_VERSION_HEADER[0]] == API_VERSION_HEADER[1]
    if response.status_code < 400:
        return None
    assert response["Content-Type"] == "application/json"
    if response.request["REQUEST_METHOD"] == "HEAD":
        assert response.content == b""
        return ""
    errors = json.loads(response.content)["errors"]
    assert isinstance(errors, list) and len(errors) == 1
    code = errors[0]["code"]
    assert response.status_code in ERROR_STATUS[code], (code, response.status_code)
    assert isinstance(errors[0]["message"], str)
    return code


@dataclass(frozen=True)
class Files:
    """(size, mtime) of every file under some directories, minus those a test allows to change."""

    entries: dict[str, tuple[int, int]]

    @classmethod
    def under(cls, *roots: Path, skip: tuple[Path, ...] = (), skip_names: str | None = None) -> Files:
        entries = {}
        for root in roots:
            for path in root.rglob("*"):
                if any(path == s or s in path.parents for s in skip) or not path.is_file():
                    continue
                if skip_names and path.name.startswith(skip_names):
                    continue
                stat = path.stat()
                entries[str(path)] = (stat.st_size, stat.st_mtime_ns)
        return cls(entries)


def row_counts() -> dict[str, int]:
    """Rows of every model the pull path may write (registry, statistics, audit)."""
    return {
        model._meta.label: model.objects.count()
        for label in ("registry", "dashboard", "audit")
        for model in apps.get_app_config(label).get_models()
    }
