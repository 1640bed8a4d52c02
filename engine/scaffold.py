"""`streamforge node new`: an installable node package from jinja2 templates, whose own tests pass."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from jinja2 import Environment, PackageLoader, StrictUndefined

NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
NodeKindName = Literal["processor", "source", "sink"]
DESCRIPTIONS = {
    "processor": "scales readings (value * factor + offset)",
    "source": "reads a device (an example counter) into Kafka",
    "sink": "writes readings to SQLite, idempotently",
}


def render_node_package(name: str, kind: NodeKindName = "processor") -> dict[str, str]:
    """The package's files by relative path, rendered but not written (the MCP tools return these)."""
    if not NAME.match(name):
        raise ValueError(f"node name {name!r} must be lower_snake_case, 2-41 characters, starting with a letter")
    if kind not in DESCRIPTIONS:
        raise ValueError(f"kind {kind!r} must be one of {', '.join(DESCRIPTIONS)}")
    package = f"streamforge_node_{name}"
    context = {
        "type_name": name,
        "kind": kind,
        "package": package,
        "distribution": f"streamforge-node-{name.replace('_', '-')}",
        "class_name": "".join(part.capitalize() for part in name.split("_")),
        "description": DESCRIPTIONS[kind],
    }
    environment = Environment(
        loader=PackageLoader("streamforge.engine", "templates/node_package"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    files = {
        "pyproject.toml": "pyproject.toml.j2",
        "README.md": "README.md.j2",
        f"{package}/__init__.py": "init.py.j2",
        f"{package}/node.py": "node.py.j2",
        "tests/test_node.py": "test_node.py.j2",
    }
    return {path: environment.get_template(template).render(**context) for path, template in files.items()}


def scaffold_node_package(name: str, target: Path, kind: NodeKindName = "processor") -> list[Path]:
    """Write the package into `target` (which must not exist or be empty); return the files written."""
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty: choose a new directory")
    written = []
    for relative, text in render_node_package(name, kind).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
