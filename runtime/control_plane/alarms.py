"""The control plane's alarm store: every transition the gateways' alarm streams carried, and each alarm's latest."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamforge.engine.schemas import ALARM_STATES, SEVERITIES
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError

UNACKNOWLEDGED = ("ACTIVE", "RTN_UNACK")  # what the toolbar counts: alarms waiting for an operator


def _position(event_id: str) -> tuple[str, int]:
    """(incarnation, sequence) of `rule|asset|parameter#incarnation.sequence`; ("", 0) for older records."""
    incarnation, _, number = event_id.rpartition("#")[2].rpartition(".")
    return (incarnation, int(number)) if number.isdigit() else ("", 0)


@dataclass(frozen=True)
class AlarmFilter:
    """Filters of /api/v1/alarms; each may hold several values, comma-separated (`state=ACTIVE,RTN_UNACK`)."""

    states: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    asset: str | None = None
    flow: str | None = None
    gateway: str | None = None
    since: str | None = None  # ISO 8601: changed at or after
    until: str | None = None

    @classmethod
    def parse(cls, params: dict[str, Any]) -> AlarmFilter:
        def listed(name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
            values = tuple(v.strip().upper() for v in str(params.get(name) or "").split(",") if v.strip())
            wrong = [v for v in values if v not in allowed]
            if wrong:
                raise ApiError(422, "invalid", f"{name} {wrong[0]!r} is not one of {', '.join(allowed)}")
            return values

        for bound in ("since", "until"):
            if params.get(bound):
                try:
                    datetime.fromisoformat(str(params[bound]))
                except ValueError:
                    example = "e.g. 2026-12-01T10:00:00+00:00"
                    raise ApiError(422, "invalid", f"`{bound}` is an ISO 8601 time, {example}") from None
        text = {k: str(params[k]) if params.get(k) else None for k in ("asset", "flow", "gateway", "since", "until")}
        return cls(listed("state", ALARM_STATES), listed("severity", SEVERITIES), text["asset"], text["flow"],
                   text["gateway"], text["since"], text["until"])  # fmt: skip

    def where(self) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        values: list[Any] = []
        for column, wanted in (("state", self.states), ("severity", self.severities)):
            if wanted:
                clauses.append(f"{column} IN ({', '.join('?' * len(wanted))})")
                values += wanted
        for column, value in (("asset_id", self.asset), ("flow_id", self.flow), ("gateway_id", self.gateway)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        if self.since:
            clauses.append("at >= ?")
            values.append(_utc(self.since))
        if self.until:
            clauses.append("at <= ?")
            values.append(_utc(self.until))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


def _utc(text: str) -> str:
    """An ISO time as the records write it (UTC, ISO 8601), so text order is time order."""
    moment = datetime.fromisoformat(text)
    return (moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)).isoformat()


def _row(row: Any) -> dict[str, Any]:
    record = json.loads(row["record"])
    return {"gateway": row["gateway_id"], "flow": row["flow_id"], "node": row["node_id"], **record}


class AlarmStore:
    """Kept in step from the alarm stream (the gateways' uplink). Idempotent: a transition is stored once by
    (gateway, event id), and an alarm's latest moves only forward in its sequence, so replays and reordering
    across batches change nothing."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, gateway_id: str, events: Any) -> int:
        """Store a batch from a gateway's uplink; how many transitions were new."""
        if not isinstance(events, list):
            raise ApiError(422, "invalid", '`events` is a list of {"flow", "node", "record"} objects')
        rows = []
        for index, event in enumerate(events):
            record = event.get("record") if isinstance(event, dict) else None
            if not isinstance(record, dict) or not isinstance(record.get("alarm_id"), str):
                raise ApiError(422, "invalid", f"events[{index}] has no alarm record with an alarm_id")
            at = str((record.get("timestamps") or {}).get("device_time") or "")
            event_id = str(record.get("event_id") or f"{record['alarm_id']}|{record.get('state')}|{at}")
            incarnation, seq = _position(event_id)
            rows.append((gateway_id, event_id, str(event.get("flow", "")), str(event.get("node", "")),
                         record["alarm_id"], incarnation, seq, str(record.get("state")), at, record.get("changed_by"),
                         json.dumps(record), record))  # fmt: skip
        received, new = time.time(), 0
        with self.store.write(desired_state=False) as db:
            for gateway, event_id, flow, node, alarm_id, incarnation, seq, state, at, by, text, record in rows:
                event_row = (gateway, event_id, flow, node, alarm_id, incarnation, seq, state, at, by, text, received)
                cursor = db.execute(
                    "INSERT OR IGNORE INTO alarm_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", event_row
                )
                new += cursor.rowcount
                if not cursor.rowcount:
                    continue  # stored before: a replay changes nothing
                # Forward only within an incarnation; a new incarnation (its state was lost) starts over.
                db.execute(
                    "INSERT INTO alarms VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (gateway_id, flow_id, node_id, alarm_id) DO UPDATE SET event_id = excluded.event_id, "
                    "incarnation = excluded.incarnation, seq = excluded.seq, state = excluded.state, "
                    "severity = excluded.severity, at = excluded.at, record = excluded.record "
                    "WHERE excluded.incarnation != alarms.incarnation OR excluded.seq > alarms.seq",
                    (gateway, flow, node, alarm_id, event_id, incarnation, seq, state, str(record.get("severity")),
                     str(record.get("asset_id")), str(record.get("parameter")), at, text),
                )  # fmt: skip
        return new

    def alarms(self, wanted: AlarmFilter, limit: int = 1000) -> list[dict[str, Any]]:
        """Each alarm's latest transition, most urgent first (unacknowledged, then by severity, newest)."""
        where, values = wanted.where()
        order = (
            "CASE state WHEN 'ACTIVE' THEN 0 WHEN 'RTN_UNACK' THEN 1 WHEN 'ACKNOWLEDGED' THEN 2 ELSE 3 END, "
            "CASE severity WHEN 'CRITICAL' THEN 0 WHEN 'HIGH' THEN 1 WHEN 'MEDIUM' THEN 2 ELSE 3 END, at DESC"
        )
        rows = self.store.db.execute(f"SELECT * FROM alarms{where} ORDER BY {order} LIMIT ?", (*values, limit))
        return [_row(row) for row in rows.fetchall()]

    def counts(self) -> dict[str, int]:
        rows = self.store.db.execute("SELECT state, COUNT(*) AS n FROM alarms GROUP BY state").fetchall()
        by_state = {row["state"]: row["n"] for row in rows}
        return {"unacknowledged": sum(by_state.get(s, 0) for s in UNACKNOWLEDGED), "by_state": by_state}

    def event(self, event_id: str, gateway_id: str | None = None) -> dict[str, Any]:
        """The transition `event_id` names, with the alarm's latest beside it (`latest`)."""
        sql = "SELECT * FROM alarm_events WHERE event_id = ?" + (" AND gateway_id = ?" if gateway_id else "")
        found = self.store.db.execute(sql, (event_id, gateway_id) if gateway_id else (event_id,)).fetchall()
        if not found:
            raise ApiError(404, "not_found", f"no alarm event {event_id!r}: take the event_id from GET /api/v1/alarms")
        if len(found) > 1:
            raise ApiError(409, "ambiguous", f'event {event_id!r} is on {len(found)} gateways; say which: "gateway"')
        row = found[0]
        latest = self.store.db.execute(
            "SELECT * FROM alarms WHERE gateway_id = ? AND flow_id = ? AND node_id = ? AND alarm_id = ?",
            (row["gateway_id"], row["flow_id"], row["node_id"], row["alarm_id"]),
        ).fetchone()  # fmt: skip
        return {**_row(row), "latest": _row(latest) if latest else None}

    def history(self, gateway_id: str, flow_id: str, node_id: str, alarm_id: str,
                limit: int = 100) -> list[dict[str, Any]]:  # fmt: skip
        rows = self.store.db.execute(
            "SELECT * FROM alarm_events WHERE gateway_id = ? AND flow_id = ? AND node_id = ? AND alarm_id = ? "
            "ORDER BY received_at DESC, seq DESC LIMIT ?", (gateway_id, flow_id, node_id, alarm_id, limit),
        ).fetchall()  # fmt: skip
        return [_row(row) for row in rows]
