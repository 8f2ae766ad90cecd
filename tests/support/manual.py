"""The client configuration snippets of the manual (docs/clients.md), as the tests use them.

Each configuration file the manual tells users to write is preceded there by a marker
`<!-- client-config: NAME -->`; the tests configure the real clients with exactly that
text, the mirror's address put in place of `mirror.example:5000`. A snippet of the manual that
stops working fails a test.
"""

from __future__ import annotations

from tests.support.mirror import PROJECT_ROOT

CLIENTS_PAGE = PROJECT_ROOT / "docs" / "clients.md"
PLACEHOLDER = "mirror.example:5000"


def client_config(name: str, mirror_host: str) -> str:
    text = CLIENTS_PAGE.read_text()
    marker = f"<!-- client-config: {name} -->"
    start = text.find(marker)
    if start < 0:
        raise AssertionError(f"docs/clients.md has no {marker!r} before a code block")
    lines = text[start + len(marker) :].splitlines()
    body: list[str] = []
    fence: str | None = None
    for line in lines:
        if fence is None:
            if line.startswith("```"):
                fence = "```"
            elif line.strip():
                raise AssertionError(f"{marker!r} must be followed by a code block, found {line!r}")
            continue
        if line.startswith(fence):
            break
        body.append(line)
    else:
        raise AssertionError(f"the code block after {marker!r} is not closed")
    snippet = "\n".join(body) + "\n"
    if PLACEHOLDER not in snippet:
        raise AssertionError(f"the {name} snippet does not name {PLACEHOLDER}")
    return snippet.replace(PLACEHOLDER, mirror_host)
