"""A registry under conformance test: its base URL and how to authorize a pull.

The same checks run against the mirror (anonymous: it needs no credentials) and, as a
check of the checks, against the upstream Distribution directly (with a pull token minted
by the test token server for the repository at hand).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import json
from urllib.parse import urljoin

import requests


@dataclass
class Target:
    name: str
    url: str
    authorize: Callable[[str], dict[str, str]]  # repository → headers
    session: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.session.trust_env = False  # 127.0.0.1 only, never through a proxy from the environment

    def request(
        self, method: str, path: str, repository: str = "", *, headers: dict[str, str] | None = None
    ) -> requests.Response:
        url = path if path.startswith("http") else urljoin(self.url + "/", path.lstrip("/"))
        all_headers = {**self.authorize(repository), **(headers or {})}
        return self.session.request(method, url, headers=all_headers, timeout=30, allow_redirects=True)


def error_codes(response: requests.Response) -> list[str]:
    """The `code` of each error in an OCI error body (empty if the body is not one)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e.get("code") for e in errors or [] if isinstance(e, dict)]


def next_link(response: requests.Response) -> str | None:
    """The target of `Link: <...>; rel="next"`, if any."""
    header = response.headers.get("Link")
    if not header:
        return None
    for part in header.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") and target.strip().startswith("<"):
            return target.strip()[1:-1]
    raise AssertionError(f'Link header without rel="next": {header!r}')
