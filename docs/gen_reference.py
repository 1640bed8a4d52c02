"""Pages the docs build generates from the code, so they cannot go stale: the layout and the MCP tools."""

from __future__ import annotations

import ast
import asyncio
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mkdocs_gen_files

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {
    "sdk": "The node author's one import, `streamforge.sdk`.",
    "engine": "The flow document, the node SDK's implementation, the compiler, record schemas and serialization.",
    "nodes": "One module per built-in node type; protocol parts shared by several in `nodes/protocols/`.",
    "runtime": "The gateway (supervisor, embedded Kafka, workers, sync agent) and the control plane.",
    "editor/src": "The browser editor (TypeScript, React).",
    "bench": "Benchmarks, each reporting ratios against a baseline measured in the same run.",
    "tests": "The suite, mirroring the folders above.",
}
JSDOC = re.compile(r"^/\*\*\s*(.*?)(?:\*/|$)", re.S)


def summary(path: Path) -> str:
    """A module's one-line summary: its docstring's first line (Python) or its leading doc comment (TypeScript).
    A module without one fails the build: every module says what it holds."""
    text = path.read_text()
    if path.suffix == ".py":
        docstring = ast.get_docstring(ast.parse(text))
        found = docstring.strip().splitlines()[0] if docstring and docstring.strip() else None
    else:
        match = JSDOC.match(text.lstrip())
        found = " ".join(line.strip(" *") for line in match.group(1).splitlines()).strip() if match else None
    if not found:
        raise RuntimeError(f"{path.relative_to(REPO)} has no one-line docstring: say what the module holds")
    return found


def modules(folder: str) -> Iterator[Path]:
    root = REPO / folder
    for path in sorted(root.rglob("*")):
        skipped = {"templates", "__pycache__", "results", "loadgen", "node_modules"} & set(path.parts)
        source = path.is_file() and path.suffix in (".py", ".ts", ".tsx") and not path.name.endswith(".gen.ts")
        if source and not skipped and not (path.name == "__init__.py" and not path.read_text().strip()):
            yield path


def layout() -> str:
    lines = ["# Layout", "", "Generated from every module's docstring by `docs/gen_reference.py` at each docs build.",
             "The folder layout is the architecture (`../shared/DESIGN.md` §2).", ""]  # fmt: skip
    for folder, purpose in FOLDERS.items():
        lines += [f"## `{folder}/`", "", purpose, "", "| module | holds |", "|---|---|"]
        for path in modules(folder):
            shown = path.relative_to(REPO / folder).as_posix()
            held = summary(path).replace("|", r"\|")
            lines.append(f"| `{shown}` | {held} |")
        lines.append("")
    return "\n".join(lines)


async def tool_list() -> list[Any]:
    from streamforge.engine.node_types import load_node_types
    from streamforge.runtime.control_plane.app import ControlPlane
    from streamforge.runtime.control_plane.mcp_tools.server import mcp_server

    with tempfile.TemporaryDirectory() as scratch:
        control_plane = ControlPlane.open(Path(scratch), load_node_types(False))
        return list(await mcp_server(control_plane.flows, control_plane.operators).list_tools())


def mcp_reference() -> str:
    lines = ["# MCP tool reference", "", "Generated from the tools' own definitions at each docs build: what an",
             "agent sees when it lists the tools. How they are used and the approvals they need: [MCP tools](mcp.md).",
             ""]  # fmt: skip
    for tool in sorted(asyncio.run(tool_list()), key=lambda t: t.name):
        schema = tool.input_schema or {}
        required = set(schema.get("required", []))
        lines += [f"## `{tool.name}`", "", (tool.description or "").strip(), ""]
        properties = schema.get("properties", {})
        if properties:
            lines += ["| argument | type | required | default |", "|---|---|---|---|"]
            for name, spec in properties.items():
                kind = spec.get("type") or " or ".join(o.get("type", "?") for o in spec.get("anyOf", []))
                default = json.dumps(spec["default"]) if "default" in spec else ""
                lines.append(f"| `{name}` | {kind} | {'yes' if name in required else ''} | {default} |")
            lines.append("")
    return "\n".join(lines)


with mkdocs_gen_files.open("layout.md", "w") as page:
    page.write(layout())
with mkdocs_gen_files.open("mcp-reference.md", "w") as page:
    page.write(mcp_reference())
