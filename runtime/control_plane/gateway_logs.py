"""The log lines gateways push over their events socket, kept on the control plane (bounded in age and number), so
a gateway that went offline still shows its logs up to its last contact."""

from __future__ import annotations

import json
import time
from typing import Any

from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.logs import LogQuery

LOGS_AGE_S = 30 * 86400.0  # spec: logs kept 30 days on the control plane ...
LOGS_ROWS = 2_000_000  # ... within a bound on their number
LINE_BYTES = 16 * 1024  # a longer pushed line is cut: the store is for reading, not for dumps


class GatewayLogs:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[str, str, float, str]] = []  # written with the heartbeats, in one transaction

    def push(self, gateway_id: str, lines: list[dict[str, Any]]) -> None:
        now = time.time()
        for line in lines:
            text = json.dumps(line, default=str)
            if len(text) > LINE_BYTES:
                text = json.dumps({**{k: line.get(k) for k in ("timestamp", "level", "component", "logger")},
                                   "message": str(line.get("message", ""))[:LINE_BYTES // 2], "cut": True})  # fmt: skip
            self._pending.append((gateway_id, str(line.get("timestamp", "")), now, text))

    def taken(self) -> list[tuple[str, str, float, str]]:
        taken, self._pending = self._pending, []
        return taken

    def write(self, rows: list[tuple[str, str, float, str]]) -> None:
        if rows:
            self.store.write_apart("INSERT INTO gateway_logs (gateway_id, at, received_at, line) VALUES (?, ?, ?, ?)",
                                   rows)  # fmt: skip

    def prune(self, now: float | None = None) -> None:
        cutoff = (now or time.time()) - LOGS_AGE_S
        self.store.write_apart("DELETE FROM gateway_logs WHERE received_at < ?", [(cutoff,)])
        self.store.write_apart("DELETE FROM gateway_logs WHERE id <= (SELECT id FROM gateway_logs ORDER BY id DESC "
                               "LIMIT 1 OFFSET ?)", [(LOGS_ROWS,)])  # fmt: skip

    def query(self, gateway_id: str, query: LogQuery) -> list[dict[str, Any]]:
        """The newest `limit` kept lines of one gateway that match, oldest first."""
        found: list[dict[str, Any]] = []
        cursor = self.store.db.execute("SELECT line FROM gateway_logs WHERE gateway_id = ? AND at > ? "
                                       "ORDER BY at DESC", (gateway_id, query.since or ""))  # fmt: skip
        for row in cursor:
            line = json.loads(row["line"])
            if query.matches(line):
                found.append(line)
                if len(found) >= query.limit:
                    break
        found.reverse()
        return found
