"""Serves the built browser editor (editor/dist) at `/`, or a page that says how to build it."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

REPO_EDITOR = Path(__file__).resolve().parents[2] / "editor"
BUILD_HINT = "npm --prefix editor ci && npm --prefix editor run build"


def editor_dist() -> Path:
    """STREAMFORGE_EDITOR_DIST if set, else the checkout's editor/dist."""
    return Path(os.environ.get("STREAMFORGE_EDITOR_DIST", REPO_EDITOR / "dist"))


def editor_routes(dist: Path | None = None) -> list[BaseRoute]:
    """Mount these last: the API and health routes come first, everything else is the editor."""
    dist = dist or editor_dist()
    if (dist / "index.html").is_file():
        return [Mount("/", app=StaticFiles(directory=dist, html=True), name="editor")]

    async def not_built(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f"<h1>The StreamForge editor is not built</h1><p>No <code>{dist}/index.html</code>. "
            f"Run <code>{BUILD_HINT}</code> (scripts/setup.sh does), then reload. The API is up at /api/v1.</p>",
            status_code=503,
        )

    return [Route("/{path:path}", not_built)]
