"""Scaffolding tools: the files of a new source or sink node package, from the SDK's template."""

# No `from __future__ import annotations`: the MCP SDK reads these signatures to build each tool's input schema.

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from streamforge.engine.scaffold import render_node_package
from streamforge.runtime.control_plane.auth import Role
from streamforge.runtime.control_plane.mcp_tools.toolkit import Toolkit


def register(kit: Toolkit) -> None:
    server, run = kit.server, kit.run

    package_name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{1,40}$", description="python identifier")]

    def template_tool(tool: str, kind: Literal["source", "sink"]) -> Callable[[Context, str], Awaitable[str]]:
        async def generate(ctx: Context, name: package_name) -> str:
            return await run(ctx, tool, Role.VIEWER, {"name": name}, name, lambda who: render_node_package(name, kind))

        return generate

    templates: tuple[tuple[str, Literal["source", "sink"]], ...] = (
        ("generate_adapter_template", "source"),
        ("generate_sink_template", "sink"),
    )
    for tool_name, kind in templates:
        server.add_tool(template_tool(tool_name, kind), name=tool_name,
                        description=f"Files of a new {kind}-node package from the SDK template (`streamforge node "
                        "new`); returned, not installed. Build and pip-install it; it then appears in "
                        "list_node_types.")  # fmt: skip
