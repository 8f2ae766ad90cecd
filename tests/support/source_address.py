"""HTTP requests sent from another loopback address (127.0.0.2, ...), as a second client
machine would: what an address allow-list sees is the connection's real source."""

from __future__ import annotations

from dataclasses import dataclass
import http.client
import ssl
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def request_from(
    source: str, url: str, *, method: str = "GET", headers: dict[str, str] | None = None, ca_file: str | None = None
) -> Answer:
    """One request from `source`; an https URL is verified against `ca_file`."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname,
            parts.port,
            timeout=30,
            source_address=(source, 0),
            context=ssl.create_default_context(cafile=ca_file),
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()
