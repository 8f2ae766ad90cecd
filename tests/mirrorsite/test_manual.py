"""README.md stays one screen and points into the manual; the manual's pages are all in its nav."""

import re

import yaml

from tests.support.mirror import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"


def test_the_readme_is_one_screen_with_the_two_commands_and_the_dockerd_snippet():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "make run" in readme and "make test" in readme
    assert '"registry-mirrors"' in readme


def test_every_page_the_readme_links_exists():
    readme = (PROJECT_ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links and [link for link in links if not (PROJECT_ROOT / link).is_file()] == []


def test_every_page_of_the_manual_is_in_its_navigation():
    config = yaml.safe_load((PROJECT_ROOT / "mkdocs.yml").read_text())
    listed = {page for entry in config["nav"] for page in entry.values()}
    assert listed == {path.name for path in DOCS.glob("*.md")}
