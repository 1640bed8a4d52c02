"""The gateway's cache of what it runs: the current and previous desired state, and a staged one while an
apply is under way. Every file is written whole (temp file, fsync, rename, fsync of the folder), so a kill at
any moment leaves the current state as it was before the apply or as it is after it, never half of either."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from streamforge.runtime.files import fsync_folder, write_durably

log = logging.getLogger("streamforge.gateway.sync")


def write_whole(path: Path, data: dict[str, Any]) -> None:
    write_durably(path, json.dumps(data, sort_keys=True).encode())  # 0600: it holds sealed secrets


def read_whole(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return data


class StateCache:
    """`current.json` runs; `previous.json` ran before it; `staging.json` exists only during an apply."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.current_path = folder / "current.json"
        self.previous_path = folder / "previous.json"
        self.staging_path = folder / "staging.json"
        self._previous_versions: dict[str, int] | None = None

    def recover(self) -> None:
        """At boot: an apply that was interrupted never became current; its staged file is dropped."""
        if self.staging_path.exists():
            log.warning("an apply was interrupted; its staged state is discarded, the current one runs",
                        extra={"staged": str(self.staging_path)})  # fmt: skip
            self.staging_path.unlink()
        for leftover in self.folder.glob(".*.tmp"):
            leftover.unlink()

    def current(self) -> dict[str, Any] | None:
        return read_whole(self.current_path)

    def previous(self) -> dict[str, Any] | None:
        return read_whole(self.previous_path)

    def previous_versions(self) -> dict[str, int]:
        """What ran before the current state; read once, then kept (every heartbeat reports it)."""
        if self._previous_versions is None:
            self._previous_versions = versions(self.previous())
        return self._previous_versions

    def stage(self, state: dict[str, Any]) -> None:
        write_whole(self.staging_path, state)

    def discard(self) -> None:
        self.staging_path.unlink(missing_ok=True)

    def promote(self) -> None:
        """The staged state becomes current; the current one is kept as previous, unless the staged state runs
        the same flow versions (a re-sent state must not overwrite the one to roll back to)."""
        current, staged = self.current(), read_whole(self.staging_path)
        if current is not None and versions(current) != versions(staged):
            write_whole(self.previous_path, current)
            self._previous_versions = versions(current)
        os.replace(self.staging_path, self.current_path)
        fsync_folder(self.folder)


def versions(state: dict[str, Any] | None) -> dict[str, int]:
    """Flow id -> version of a desired state."""
    return {flow["id"]: int(flow["version"]) for flow in (state or {}).get("flows", [])}
