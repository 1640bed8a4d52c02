"""Structured JSON logging for every StreamForge process, and the gateway's on-disk ring of those lines."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

LOG_DIR_ENV = "STREAMFORGE_LOG_DIR"  # set by the gateway: its workers write their lines into the same ring
RING_BYTES = 100 * 1024 * 1024  # spec: local logs are a 100 MB, 7-day ring buffer
RING_AGE_S = 7 * 86400.0
FILE_BYTES = 8 * 1024 * 1024  # one process rotates its file at this size and keeps three old ones
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _formatter(component: str) -> JsonFormatter:
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"component": component, "gateway_id": os.environ.get("STREAMFORGE_GATEWAY_ID", "local")},
        timestamp=True,  # ISO 8601 in UTC with microseconds: sub-second ordering across processes
    )


def configure_logging(component: str, level: str | None = None, log_dir: Path | None = None,
                      file_stem: str | None = None) -> None:  # fmt: skip
    """One JSON object per line on stderr: timestamp, level, component, message and any extras; and the same lines
    into the ring at `log_dir` (default: $STREAMFORGE_LOG_DIR, which children inherit), file `file_stem`.jsonl."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    ring = log_dir or (Path(os.environ[LOG_DIR_ENV]) if os.environ.get(LOG_DIR_ENV) else None)
    if ring is not None:
        ring.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]", "-", file_stem or component)
        handlers.append(logging.handlers.RotatingFileHandler(ring / f"{stem}.jsonl", maxBytes=FILE_BYTES,
                                                             backupCount=3, encoding="utf-8"))  # fmt: skip
        os.environ[LOG_DIR_ENV] = str(ring)
    for handler in handlers:
        handler.setFormatter(_formatter(component))
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level or os.environ.get("STREAMFORGE_LOG_LEVEL", "INFO"))
    # aiokafka logs every retry at WARNING; during a broker restart that is noise, not news.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")
    if not any(isinstance(f, RetriedFailureIsAWarning) for f in coordinator.filters):
        coordinator.addFilter(RetriedFailureIsAWarning())
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


class RetriedFailureIsAWarning(logging.Filter):
    """aiokafka's group coordinator logs failures it retries (a coordinator lookup, a heartbeat) at ERROR. On a fresh
    broker every consumer group's first lookup fails (the coordinator is not elected yet), so each first start
    showed operators an ERROR for what fixes itself: a failure with a retriable error is logged as a WARNING; one
    that lasts leaves its node short of RUNNING, and a fatal one stays an ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if record.levelno == logging.ERROR and getattr(error, "retriable", False):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


@dataclass(frozen=True)
class LogQuery:
    """Filters of /api/v1/logs: minimum level, component, flow, node, since (ISO time), text `q`, at most `limit`."""

    level: str = "INFO"
    component: str | None = None
    flow: str | None = None
    node: str | None = None
    since: str | None = None
    q: str | None = None
    limit: int = 200

    @classmethod
    def parse(cls, params: dict[str, Any]) -> LogQuery:
        """From query parameters or tool arguments; ValueError saying which one is wrong and what fits."""
        level = str(params.get("level") or "INFO").upper()
        if level not in LEVELS:
            raise ValueError(f"level {level!r} is not one of {', '.join(LEVELS)}")
        since = params.get("since") or None
        if since is not None:
            try:
                datetime.fromisoformat(str(since))
            except ValueError:
                raise ValueError(f"since {since!r} is not an ISO 8601 time, e.g. 2026-12-01T10:00:00+00:00") from None
        try:
            limit = int(params.get("limit") or 200)
        except ValueError:
            raise ValueError(f"limit {params.get('limit')!r} is not a whole number") from None
        text = {k: (str(params[k]) if params.get(k) else None) for k in ("component", "flow", "node", "q")}
        return cls(level, text["component"], text["flow"], text["node"], since, text["q"], max(1, min(limit, 5000)))

    def matches(self, line: dict[str, Any]) -> bool:
        level = str(line.get("level", "INFO"))
        if (LEVELS.index(level) if level in LEVELS else 1) < LEVELS.index(self.level):
            return False
        for name in ("component", "flow", "node"):
            wanted = getattr(self, name)
            if wanted is not None and str(line.get(name, "")) != wanted:
                return False
        if self.since is not None and _instant(line.get("timestamp")) <= _instant(self.since):
            return False
        return self.q is None or self.q.lower() in json.dumps(line, default=str).lower()


def _instant(text: Any) -> float:
    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromisoformat(str(text)).timestamp()
    return 0.0


class LogRing:
    """The gateway's log files (its own, and one per worker), bounded in total size and age: the oldest files go
    first. Read newest-first, so a query for the latest lines stops early."""

    def __init__(self, folder: Path, max_bytes: int = RING_BYTES, max_age_s: float = RING_AGE_S) -> None:
        self.folder, self.max_bytes, self.max_age_s = folder, max_bytes, max_age_s

    def files(self) -> list[Path]:
        """Newest first, by last write."""
        found = [(path.stat().st_mtime, path) for path in self.folder.glob("*.jsonl*") if path.is_file()]
        return [path for _, path in sorted(found, reverse=True)]

    def prune(self) -> int:
        """Delete files past the age bound, then the oldest until the ring fits its size bound; how many went."""
        removed, total, now = 0, 0, time.time()
        for path in self.files():
            with contextlib.suppress(FileNotFoundError):
                size, age = path.stat().st_size, now - path.stat().st_mtime
                if age > self.max_age_s or (total + size > self.max_bytes and path.suffix != ".jsonl"):
                    path.unlink()  # a live file (.jsonl) is only truncated by its own rotation
                    removed += 1
                else:
                    total += size
        return removed

    def _lines(self, path: Path) -> Iterator[dict[str, Any]]:
        with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
            for raw in reversed(file.read().splitlines()):
                with contextlib.suppress(ValueError):
                    line = json.loads(raw)
                    if isinstance(line, dict):
                        yield line

    def query(self, query: LogQuery) -> list[dict[str, Any]]:
        """The newest `limit` matching lines, oldest first."""
        since = _instant(query.since) if query.since else 0.0
        found: list[dict[str, Any]] = []
        for path in self.files():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < since:
                    break  # files are newest first: none after this one has a line that new
            found += [line for line in self._lines(path) if query.matches(line)]
        found.sort(key=lambda line: str(line.get("timestamp", "")))
        return found[-query.limit :]


class LogTail:
    """The lines added to a ring since the last call, across its files and their rotations (followed by inode):
    what a gateway pushes to its control plane. Starts at the ring's end; lines written while the link was down
    are read at the next call, so none are skipped while the process lives."""

    def __init__(self, ring: LogRing) -> None:
        self.ring = ring
        self._read: dict[int, int] | None = None  # inode -> bytes read

    def _sizes(self) -> dict[int, tuple[Path, int]]:
        """inode -> (path, size), oldest file first (the ring lists them newest first)."""
        found = {}
        for path in reversed(self.ring.files()):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                found[stat.st_ino] = (path, stat.st_size)
        return found

    def new_lines(self, limit: int) -> list[dict[str, Any]]:
        """At most `limit` new whole lines, oldest file first (the rest at the next call)."""
        files = self._sizes()
        if self._read is None:
            self._read = {inode: size for inode, (_, size) in files.items()}
            return []
        lines: list[dict[str, Any]] = []
        for inode, (path, size) in files.items():
            start = self._read.get(inode, 0)
            if size < start:  # truncated in place: read it from the start again
                start = 0
            if size == start or len(lines) >= limit:
                continue
            with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
                file.seek(start)
                chunk = file.read(size - start)
                whole = chunk[: chunk.rfind(b"\n") + 1]
                for raw in whole.splitlines():
                    if len(lines) >= limit:
                        break
                    start += len(raw) + 1
                    with contextlib.suppress(ValueError):
                        line = json.loads(raw)
                        if isinstance(line, dict):
                            lines.append(line)
            self._read[inode] = start
        for gone in set(self._read) - set(files):
            del self._read[gone]
        return lines
