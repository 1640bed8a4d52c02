"""The README stays the front door: short, every link resolving, every headline figure naming its command."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= 250, "reference material belongs in docs/"


def test_every_relative_link_of_the_readme_resolves() -> None:
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    local = [target for target in targets if "://" not in target]
    assert local, "the README links into docs/"
    assert [target for target in local if not (REPO / target).exists()] == []


def test_every_headline_figure_names_the_command_that_produces_it() -> None:
    table = README.split("## Headline figures", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]  # no header
    assert rows
    previous = None
    for row in rows:
        command = row.rstrip(" |").rsplit("|", 1)[1].strip()
        if command == "same":
            assert previous is not None
            continue
        script = re.fullmatch(r"`\.venv/bin/python (bench/\w+\.py)( [^`]*)?`", command)
        assert script is not None and (REPO / script.group(1)).exists(), row
        previous = command
