"""The operator's services, shared by the REST API and the MCP tools: alarms and their actions, the DLQ workflow,
logs, node restarts and the health roll-up, across every gateway (each asked over its own events socket)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from streamforge.runtime.control_plane.alarms import AlarmFilter, AlarmStore
from streamforge.runtime.control_plane.fleet import Approval, FleetService
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError
from streamforge.runtime.logs import LogQuery, LogRing

ALARM_ACTIONS = ("acknowledge", "shelve", "unshelve", "suppress", "unsuppress", "remove_from_service",
                 "return_to_service")  # fmt: skip
ACTION_ARGUMENTS = ("duration_s", "one_shot", "comment")
# Spec roll-up: a node's status as a component's health.
NODE_HEALTH = {"RUNNING": "HEALTHY", "DEGRADED": "DEGRADED", "STARTING": "DEGRADED", "STOPPED": "UNHEALTHY",
               "FAILED": "FAILED"}  # fmt: skip
RANK = ("HEALTHY", "DEGRADED", "UNHEALTHY", "FAILED")
OPERATION_TIMEOUT_S = 60.0
APPROVAL_TTL_S = 900.0
CONTROL_PLANE = "control-plane"  # the `gateway` of the control plane's own log lines


def worst(statuses: list[str]) -> str:
    return max(statuses, key=lambda s: RANK.index(s) if s in RANK else len(RANK) - 2, default="HEALTHY")


def action_digest(action: str, arguments: dict[str, Any]) -> str:
    """Identifies one operator action exactly: what a human's approval of an agent's action is bound to."""
    significant = {"action": action, **{k: v for k, v in arguments.items() if v is not None}}
    return hashlib.sha256(json.dumps(significant, sort_keys=True, default=str).encode()).hexdigest()


def audit_digest(arguments: dict[str, Any]) -> str:
    """SHA-256 of an action's whole argument set (every parameter, defaults included, by its own name), as canonical
    JSON: what an auditor recomputes from the call to prove what was asked. REST actions and MCP tools share it."""
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class OperatorService:
    """Every operator action names its user and is audited; a refusal says what was wrong and what to do."""

    def __init__(self, store: Store, fleet: FleetService, own_logs: LogRing) -> None:
        self.store, self.fleet, self.own_logs = store, fleet, own_logs
        self.alarms = AlarmStore(store)

    # -- which gateways --------------------------------------------------------------------------------

    def _approved(self) -> list[str]:
        return [row["id"] for row in self.fleet.gateways() if row["status"] == Approval.APPROVED]

    def targets(self, gateway: str | None) -> list[str]:
        if gateway is None:
            return self._approved()
        self.fleet.details(gateway)  # 404 when unknown
        return [gateway]

    def gateway_of(self, gateway: str | None, flow: str) -> str:
        """The gateway an action on `flow` goes to: the one named, or the only one running it."""
        if gateway is not None:
            return self.targets(gateway)[0]
        running = sorted(self.fleet.running_on(flow))
        if len(running) == 1:
            return running[0]
        if not running:
            raise ApiError(409, "not_running", f"no gateway reports running flow {flow!r}; deploy it first")
        raise ApiError(409, "ambiguous", f"flow {flow!r} runs on {len(running)} gateways ({', '.join(running)}): "
                       'say which with "gateway"')  # fmt: skip

    async def relay(self, gateway_id: str, operation: str, args: dict[str, Any]) -> Any:
        return await self.fleet.command(gateway_id, {"op": operation, "args": args}, OPERATION_TIMEOUT_S)

    async def fan_out(self, operation: str, args: dict[str, Any],
                      gateway: str | None) -> tuple[list[tuple[str, Any]], dict[str, str]]:  # fmt: skip
        """Ask every target gateway at once: the answers, and why the others did not answer."""
        targets = self.targets(gateway)
        outcomes = await asyncio.gather(*(self.relay(g, operation, args) for g in targets), return_exceptions=True)
        answers, unreachable = [], {}
        for gateway_id, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, ApiError):
                if gateway is not None:
                    raise outcome  # asked of one gateway: its refusal is the answer
                unreachable[gateway_id] = outcome.message
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers.append((gateway_id, outcome))
        return answers, unreachable

    def audit(self, user: str, action: str, arguments: dict[str, Any], target: str | None, outcome: str,
              detail: str | None = None, approved_by: str | None = None) -> None:  # fmt: skip
        self.store.audit(user, action, audit_digest(arguments), target, outcome, detail, approved_by)

    # -- alarms ----------------------------------------------------------------------------------------

    def list_alarms(self, params: dict[str, Any]) -> dict[str, Any]:
        alarms = self.alarms.alarms(AlarmFilter.parse(params))
        return {"alarms": alarms, "counts": self.alarms.counts()}

    async def alarm_action(self, action: str, body: dict[str, Any], user: str,
                           approved_by: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Act on the alarm event `body["event_id"]` names, on its gateway's alarm rule. Refused as stale here when
        the store already knows a later event, and by the rule itself when the gateway does."""
        if action not in ALARM_ACTIONS:
            raise ApiError(404, "not_found", f"no alarm action {action!r}; actions: {', '.join(ALARM_ACTIONS)}")
        event_id = body.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise ApiError(422, "invalid", "`event_id` is required: the alarm event you act on (GET /api/v1/alarms)")
        gateway = body.get("gateway") if isinstance(body.get("gateway"), str) else None
        arguments = {"event_id": event_id, **{k: body[k] for k in ACTION_ARGUMENTS if k in body}}
        try:
            event = self.alarms.event(event_id, gateway)
            latest = event["latest"]
            if latest is not None and latest["event_id"] != event_id:
                now = f"{latest['state']} ({latest['event_id']})"
                raise ApiError(409, "stale", f"stale: {event_id} is not this alarm's latest event; it is now {now}: "
                               "look at it again and act on that")  # fmt: skip
            command = {"asset_id": event["asset_id"], "parameter": event["parameter"], "user": user, **arguments}
            result = await self.fleet.command(event["gateway"], {"flow": event["flow"], "node": event["node"],
                                                                 "name": action, "args": command})  # fmt: skip
        except ApiError as refused:
            self.audit(user, f"alarm.{action}", arguments, event_id, "refused", refused.message[:500], approved_by)
            raise
        self.audit(user, f"alarm.{action}", arguments, event_id, "ok", None, approved_by)
        return {"action": action, "event_id": event_id, "alarm_id": event["alarm_id"], "gateway": event["gateway"],
                "by": user, "emitted": result.get("emitted", {})}  # fmt: skip

    # -- the DLQ workflow --------------------------------------------------------------------------------

    async def dead_letters(self, params: dict[str, Any]) -> dict[str, Any]:
        gateway = params.pop("gateway", None) or None
        answers, unreachable = await self.fan_out("dlq.list", params, gateway)
        records = [{"gateway": g, **r} for g, answer in answers for r in answer["records"]]
        records.sort(key=lambda r: str(r.get("failed_at")), reverse=True)
        counts: dict[str, int] = {}
        for _, answer in answers:
            for code, n in answer["counts_by_reason"].items():
                counts[code] = counts.get(code, 0) + n
        return {"records": records, "total": sum(a["total"] for _, a in answers),
                "waiting": sum(a["waiting"] for _, a in answers), "counts_by_reason": counts,
                "unreachable": unreachable}  # fmt: skip

    async def approve_dead_letters(self, gateway: str | None, ids: Any, user: str,
                                   approved_by: str | None = None) -> dict[str, Any]:  # fmt: skip
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError(422, "invalid", '`ids`: the dead letters to reprocess, e.g. ["dlq.telemetry/3/120"]')
        targets = self.targets(gateway)
        if len(targets) != 1:
            raise ApiError(409, "ambiguous", 'dead-letter ids are per gateway: say which with "gateway"')
        return await self._job(targets[0], "dlq.approve", {"ids": ids, "user": user}, user, approved_by)

    async def revalidate(self, gateway: str | None, flow: Any, node: Any, user: str) -> dict[str, Any]:
        if not isinstance(flow, str) or not isinstance(node, str):
            raise ApiError(422, "invalid", "`flow` and `node`: the validator whose current rules re-judge its DLQ")
        target = self.gateway_of(gateway, flow)
        return await self._job(target, "dlq.revalidate", {"flow": flow, "node": node, "user": user}, user, None)

    async def _job(self, gateway_id: str, operation: str, args: dict[str, Any], user: str,
                   approved_by: str | None) -> dict[str, Any]:  # fmt: skip
        try:
            job = await self.relay(gateway_id, operation, args)
        except ApiError as refused:
            self.audit(user, operation, args, gateway_id, "refused", refused.message[:500], approved_by)
            raise
        self.audit(user, operation, args, gateway_id, "ok", f"job {job['id']}", approved_by)
        return {"gateway": gateway_id, **job}

    async def job(self, gateway: str | None, job_id: str) -> dict[str, Any]:
        if gateway is None:
            raise ApiError(422, "invalid", "`gateway` is required: a job runs on one gateway")
        return {"gateway": gateway, **await self.relay(self.targets(gateway)[0], "dlq.job", {"job": job_id})}

    # -- logs, restarts, health ------------------------------------------------------------------------

    async def logs(self, params: dict[str, Any]) -> dict[str, Any]:
        """Each connected gateway's log ring, asked over its link; for a gateway that is offline, the lines it
        pushed up to its last contact (`kept`); and the control plane's own (gateway `control-plane`)."""
        gateway = params.pop("gateway", None) or None
        try:
            query = LogQuery.parse(params)
        except ValueError as wrong:
            raise ApiError(422, "invalid", str(wrong)) from None
        own = gateway in (None, CONTROL_PLANE)
        answers: list[tuple[str, list[dict[str, Any]]]] = []
        unreachable: dict[str, str] = {}
        if gateway != CONTROL_PLANE:
            live = [g for g in self.targets(gateway) if self.fleet.connected(g)]
            asked = await asyncio.gather(*(self.relay(g, "logs", params) for g in live), return_exceptions=True)
            for gateway_id, outcome in zip(live, asked, strict=True):
                if isinstance(outcome, ApiError):
                    unreachable[gateway_id] = outcome.message
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    answers.append((gateway_id, outcome["lines"]))
            for gateway_id in [g for g in self.targets(gateway) if g not in live] + list(unreachable):
                unreachable.setdefault(gateway_id, "offline: its lines up to its last contact, as it pushed them")
                kept = await asyncio.to_thread(self.fleet.logs.query, gateway_id, query)
                answers.append((gateway_id, [{**line, "kept": True} for line in kept]))
        if own:
            answers.append((CONTROL_PLANE, await asyncio.to_thread(self.own_logs.query, query)))
        lines = [{**line, "gateway": g} for g, found in answers for line in found]
        lines.sort(key=lambda line: str(line.get("timestamp", "")))
        return {"lines": lines[-query.limit :], "unreachable": unreachable}

    async def restart(self, gateway: str | None, flow: str, node: str, user: str,
                      approved_by: str | None = None) -> dict[str, Any]:  # fmt: skip
        args = {"flow": flow, "node": node, "user": user}
        try:
            target = self.gateway_of(gateway, flow)
            result = await self.relay(target, "node.restart", args)
        except ApiError as refused:
            self.audit(user, "node.restart", args, f"{flow}/{node}", "refused", refused.message[:500], approved_by)
            raise
        self.audit(user, "node.restart", args, f"{flow}/{node}", "ok", json.dumps(result), approved_by)
        return {"gateway": target, **result}

    async def health(self) -> dict[str, Any]:
        """The spec's roll-up: each gateway's components (Kafka, disk, every node) as HEALTHY / DEGRADED /
        UNHEALTHY / FAILED, the gateway as the worst of them (or OFFLINE), and the whole as the worst gateway."""
        gateways = []
        for gateway_id in self._approved():
            details = self.fleet.details(gateway_id)
            report = details.get("heartbeat") or {}
            components = [{"component": "kafka", "status": "HEALTHY" if report.get("kafka") in ("HEALTHY", "EXTERNAL")
                           else "UNHEALTHY", "detail": report.get("kafka")}]  # fmt: skip
            disk = report.get("disk") or {}
            if disk.get("tier"):
                tier = str(disk["tier"])
                components.append({"component": "disk", "detail": tier, "status": {"NORMAL": "HEALTHY", "ALERT":
                                   "HEALTHY", "BLOCK": "UNHEALTHY"}.get(tier, "DEGRADED")})  # fmt: skip
            rates = self.fleet.metrics.rates(gateway_id) if details["health"] not in ("OFFLINE", "NEVER_SEEN") else {}
            for node in report.get("nodes", []):
                key = f"{node['flow']}/{node['node']}"
                components.append({"component": key, "type": node.get("type"),
                                   "status": NODE_HEALTH.get(node.get("status", ""), "UNHEALTHY"),
                                   "node_status": node.get("status"), "restarts": node.get("restarts", 0),
                                   "last_error": node.get("last_error"), "lag": node.get("lag"),
                                   **rates.get(key, {})})  # fmt: skip
            rolled = worst([str(c["status"]) for c in components])
            status = details["health"] if details["health"] in ("OFFLINE", "NEVER_SEEN") else rolled
            gateways.append({"gateway": gateway_id, "name": details["name"], "status": status,
                             "last_seen": details["last_seen"], "components": components})  # fmt: skip
        overall = worst(["UNHEALTHY" if g["status"] in ("OFFLINE", "NEVER_SEEN") else g["status"] for g in gateways])
        return {"status": overall, "control_plane": "HEALTHY", "gateways": gateways,
                "alarms": self.alarms.counts()}  # fmt: skip

    # -- approvals of an agent's actions -------------------------------------------------------------------

    def approve_action(self, action: str, arguments: Any, approver: str) -> dict[str, Any]:
        """A human's approval of one operator action an agent proposes, bound to exactly its arguments."""
        if not isinstance(arguments, dict):
            raise ApiError(422, "invalid", '`arguments`: the action\'s exact arguments, e.g. {"event_id": "..."}')
        computed = action_digest(action, arguments)
        token = self.store.issue_approval(f"action:{action}", computed, action, approver, APPROVAL_TTL_S)
        self.audit(approver, "approve_action", {"action": action, **arguments}, action, "ok", computed[:12])
        return {"approval_token": token, "action": action, "arguments": arguments, "change_digest": computed,
                "expires_in_s": APPROVAL_TTL_S, "note": "single-use; shown once"}  # fmt: skip

    def spend_approval(self, action: str, arguments: dict[str, Any], token: str, caller: str) -> str:
        approved_by = self.store.use_approval(token, f"action:{action}", action_digest(action, arguments), action)
        if approved_by == caller:
            raise ApiError(403, "self_approval", f"{caller!r} approved this action and cannot also carry it out")
        return approved_by
