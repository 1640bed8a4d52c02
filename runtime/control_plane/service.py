"""Flow operations shared by the REST API and the MCP tools: one place that saves, checks, diffs and deploys."""

from __future__ import annotations

import asyncio
import bisect
import copy
import functools
import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from streamforge.engine.compiler import compile_document
from streamforge.engine.flow import FlowDiff, FlowDocument, check_size, diff_flows, load_flow, parse_flow, validate_flow
from streamforge.engine.node_types import NodeTypes
from streamforge.engine.plan import ExecutionPlan
from streamforge.engine.problems import MORE_PROBLEMS, FlowInvalid, Problem
from streamforge.engine.sdk import Kind
from streamforge.engine.secrets import externalize, unreadable
from streamforge.runtime.control_plane.fleet import FleetService
from streamforge.runtime.control_plane.operations import action_digest
from streamforge.runtime.control_plane.store import FlowVersion, Store
from streamforge.runtime.errors import ApiError

DEPLOY_TIMEOUT_S = 120.0  # how long a deploy waits for its gateways to acknowledge the new version
# Flow checks (parse, compile, diff) run on these threads, never on the event loop: a big flow must not stall
# every other request (issue #41, V3). Two, as the machine's cores: more would only contend for the interpreter's
# lock with the event loop. The node and wire caps (engine/flow.py) bound one check (a flow at both caps: ~0.7 s of
# CPU); the time bound covers waiting behind other checks on a busy machine: past it the caller gets 503, and a
# check still waiting never starts (one already running ends within its bounded work, its answer dropped).
CHECK_THREADS = 2
CHECK_TIMEOUT_S = 30.0
_checks = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="flow-check")
Checked = TypeVar("Checked")


async def off_loop(check: Callable[[], Checked]) -> Checked:
    """`check` (CPU work on a flow, bounded by the caps) run on a check thread; 503 if it has no answer within
    CHECK_TIMEOUT_S, e.g. behind many others."""
    try:
        return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(_checks, check), CHECK_TIMEOUT_S)
    except TimeoutError:
        raise ApiError(503, "busy", f"checking the flow took longer than {CHECK_TIMEOUT_S:g} s: the control plane "
                       "is checking other flows; try again in a moment") from None  # fmt: skip


def change_digest(document: dict[str, Any]) -> str:
    """Identifies one exact change: what an approval is bound to (version and canvas positions excluded)."""
    significant = {"id": document.get("id"), "label": document.get("label"),
                   "nodes": sorted(({k: v for k, v in n.items() if k not in ("x", "y")} for n in document["nodes"]),
                                   key=lambda n: str(n.get("id"))),
                   "edges": sorted((e["from"], e["to"]) for e in document["edges"])}  # fmt: skip
    return hashlib.sha256(json.dumps(significant, sort_keys=True).encode()).hexdigest()


def bound_digest(digest: str, target: dict[str, Any] | None) -> str:
    """A change's digest bound to where it is deployed (a gateway or labels), when the approval names one."""
    if not target:
        return digest
    return hashlib.sha256(json.dumps([digest, target], sort_keys=True).encode()).hexdigest()


def fleet_digest(action: str, flow_id: str, arguments: dict[str, Any]) -> str:
    """Identifies one fleet action exactly: what its approval is bound to."""
    return action_digest(action, {"flow": flow_id, **arguments})


def placement(document: FlowDocument, kind: Kind, after: str | None) -> tuple[float, float]:
    """Where a new node goes on the canvas: right of `after`, else in its kind's column, below what is there."""
    columns = {Kind.SOURCE: 40.0, Kind.PROCESSOR: 360.0, Kind.SINK: 1000.0}
    anchor = document.node(after) if after else None
    x = anchor.x + 320 if anchor else columns[kind]
    y = anchor.y if anchor else 80.0
    column = sorted(n.y for n in document.nodes if abs(n.x - x) < 200)  # sorted once: each step is a bisection
    while (above := bisect.bisect_right(column, y - 120)) < len(column) and column[above] < y + 120:
        y += 140
    return x, y


class FlowService:
    """The control plane's flow operations, with the store, the node types and the fleet a deploy goes to."""

    def __init__(self, store: Store, node_types: NodeTypes, fleet: FleetService) -> None:
        self.store, self.node_types, self.fleet = store, node_types, fleet

    async def plan(self, document: dict[str, Any], secret: Callable[[str], str | None] | None = None) -> ExecutionPlan:
        """compile_document off the event loop (see off_loop)."""
        return await off_loop(lambda: compile_document(document, self.node_types, secret))

    async def problems(self, document: FlowDocument) -> list[Problem]:
        """What a deploy would refuse, checked with stand-ins for secrets (no secret is read to validate), and every
        reference to a secret the flow may not read."""
        raw = document.model_dump(by_alias=True)
        try:
            check_size(raw)  # before any walk of the nodes
        except FlowInvalid as invalid:
            return invalid.problems
        scoped = await off_loop(lambda: unreadable(raw, lambda name: self.store.secret_readable(document.id, name)))
        try:
            await self.plan(raw)
        except FlowInvalid as invalid:
            return invalid.problems + scoped
        return scoped

    async def changes(self, flow_id: str, document: Any, gateway_id: str | None = None) -> dict[str, Any]:
        """What deploying `document` would restart, against what runs (on `gateway_id`, else what was last
        deployed): the compiler's fingerprints, the definition the gateway deploys by (a rename restarts nothing, a
        rewire restarts the node). With `problems` when it would not deploy; `modified` is then null. A document
        over the node or wire cap is refused (FlowInvalid) before anything else."""
        check_size(document)
        summary = next((f for f in self.store.list_flows() if f["id"] == flow_id), None)
        deployed_version = summary["deployed_version"] if summary else None
        if gateway_id is not None:
            deployed_version = self.fleet.running_on(flow_id).get(gateway_id, {}).get("version")
        before = (await self.plan(self.store.get_flow(flow_id, deployed_version).document)
                  if deployed_version is not None else None)  # fmt: skip
        running = {node.node_id for node in before.nodes} if before else set()
        try:
            after = await self.plan(document if isinstance(document, dict) else {})
        except FlowInvalid as invalid:
            ids = (
                {n.get("id") for n in document.get("nodes", []) if isinstance(n, dict)}
                if isinstance(document, dict)
                else set()
            )
            return {"flow": flow_id, "deployed_version": deployed_version, "modified": None,
                    "removed": sorted(running - ids), "problems": [p.to_dict() for p in invalid.problems]}  # fmt: skip
        same = after.unchanged_since(before)
        return {"flow": flow_id, "deployed_version": deployed_version,
                "modified": sorted(n.node_id for n in after.nodes if n.node_id not in same),
                "removed": sorted(running - {n.node_id for n in after.nodes}), "problems": []}  # fmt: skip

    def save(self, document: FlowDocument, base_version: int | None, user: str) -> FlowVersion:
        """Store a version; plaintext in secret fields moves into the secret store first."""
        stored = externalize(document.model_dump(by_alias=True), self.node_types,
                             lambda name, value: self.store.put_secret(name, value, user))  # fmt: skip
        return self.store.save_flow(stored, base_version, user)

    async def import_flow(self, source: bytes, user: str) -> FlowVersion:
        """All or nothing: the document is checked whole, compile included; a bad import stores nothing."""
        document = await off_loop(lambda: load_flow(source))
        await self.plan(document.model_dump(by_alias=True))  # FlowInvalid: every problem, none stored
        existing = next((f for f in self.store.list_flows() if f["id"] == document.id), None)
        return self.save(document, existing["version"] if existing else None, user)

    async def diff(self, flow_id: str, old: int, new: int) -> FlowDiff:
        before, after = self.store.get_flow(flow_id, old).document, self.store.get_flow(flow_id, new).document
        return await off_loop(lambda: diff_flows(validate_flow(before), validate_flow(after)))

    def restore(self, flow_id: str, version: int, user: str) -> FlowVersion:
        old = self.store.get_flow(flow_id, version)
        current = self.store.get_flow(flow_id)
        return self.store.save_flow({**old.document, "version": current.version}, current.version, user)

    def delete(self, flow_id: str) -> list[str]:
        """Unassign the flow everywhere (its gateways stop it), then hide it; returns those gateways."""
        self.store.get_flow(flow_id)  # 404 when unknown
        gateways = self.fleet.unassign_all(flow_id)
        self.store.mark_deployed(flow_id, None)
        self.store.delete_flow(flow_id)
        return gateways

    def undeploy(self, flow_id: str) -> dict[str, Any]:
        """Stop the flow on every gateway: its assignments go; the flow and its versions stay."""
        self.store.get_flow(flow_id)
        gateways = self.fleet.unassign_all(flow_id)
        self.store.mark_deployed(flow_id, None)
        return {"flow": flow_id, "stopped_on": gateways}

    async def deploy(self, flow_id: str, mode: str = "modified", user: str = "streamforge",
                     gateway_id: str | None = None,
                     labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
        """Deploy the latest version: assign it wherever the flow is assigned, and to the target named here (a
        gateway or a label selector), then wait for the gateways that are online to acknowledge it. A flow that
        does not compile raises FlowInvalid and touches nothing; a flow with no target is refused, asking where.
        Each gateway's result is in the answer; 409 when every gateway that answered rolled it back."""
        if mode not in ("modified", "full"):
            raise ApiError(422, "invalid", "mode must be `modified` or `full`")
        fleet = self.fleet
        version = self.store.get_flow(flow_id)
        readable = functools.partial(self.store.secret_readable, flow_id)
        scoped = await off_loop(lambda: unreadable(version.document, readable))
        if scoped:
            raise FlowInvalid(scoped)
        await self.plan(version.document, self.store.secret)
        targets: list[tuple[str | None, dict[str, str] | None]] = [
            (a["target"], None) if a["target_kind"] == "gateway" else (None, a["labels"])
            for a in fleet.assignments(flow_id)
        ]
        if gateway_id is not None or labels is not None:
            fleet.covered(gateway_id, labels)  # 422 unless exactly one target; 404 for an unknown gateway
            if gateway_id is not None:
                fleet.details(gateway_id)
            if (gateway_id, labels) not in targets:
                targets.append((gateway_id, labels))
        if not targets:
            raise ApiError(409, "no_target", f"flow {flow_id} is assigned to no gateway yet: say where to deploy it, "
                           '{"gateway": "gw_..."} or {"labels": {"site": "north"}}')  # fmt: skip
        covered = set().union(*(fleet.covered(g, selector) for g, selector in targets))
        online = {g for g in covered if fleet.health_of(g) not in ("OFFLINE", "NEVER_SEEN")}
        waiter = fleet.waiter(flow_id, version.version, online)
        for target_gateway, selector in targets:
            fleet.assign(flow_id, version.version, user, target_gateway, selector, restart=mode == "full")
        answers = await fleet.wait(waiter, DEPLOY_TIMEOUT_S) if online else {}
        results: dict[str, dict[str, Any]] = {}
        for gateway in sorted(covered):
            answer = answers.get(gateway)
            if answer is None:
                why = "offline: it applies it when it is back" if gateway not in online else (
                    f"no answer within {DEPLOY_TIMEOUT_S:.0f} s: it applies it when it next syncs")  # fmt: skip
                results[gateway] = {"result": "PENDING", "cause": why}
                continue
            report = answer.get("reports", {}).get(flow_id) or {}
            results[gateway] = {"result": answer["result"], "cause": answer.get("cause"),
                                **{k: report.get(k, []) for k in ("started", "stopped", "unchanged")}}  # fmt: skip
        applied = [g for g, r in results.items() if r["result"] == "APPLIED"]
        rolled_back = {g: r["cause"] for g, r in results.items() if r["result"] == "NOT_APPLIED"}
        if rolled_back and not applied:
            causes = "; ".join(f"gateway {g}: {cause}" for g, cause in rolled_back.items())
            raise ApiError(409, "deploy_rolled_back", f"deploy of flow {flow_id} v{version.version} rolled back: "
                           f"{causes}")  # fmt: skip
        if applied or not covered:
            self.store.mark_deployed(flow_id, version.version)
        first = results[applied[0]] if applied else {}
        return {"flow": flow_id, "version": version.version, "targets": [
                    {"gateway": g} if g else {"labels": selector} for g, selector in targets],
                "gateways": results, **{k: first.get(k, []) for k in ("started", "stopped", "unchanged")}}  # fmt: skip

    def viewed_gateway(self, flow_id: str | None, gateway_id: str | None,
                       running: dict[str, Any] | None = None) -> str | None:  # fmt: skip
        """The gateway a view of `flow_id` shows: the one named, else the first by id of those running it (with no
        flow: the only approved gateway), else None."""
        if gateway_id is not None:
            return gateway_id
        if flow_id is None:
            try:
                return self.fleet.pick(None)
            except ApiError:
                return None
        running = self.fleet.running_on(flow_id) if running is None else running
        return sorted(running)[0] if running else None

    def status(self, flow_id: str, gateway_id: str | None = None) -> dict[str, Any]:
        """What runs of the flow, per gateway; `deployed_version` and `nodes` of `gateway_id` (default: the only
        gateway running it, else the first by id)."""
        running = self.fleet.running_on(flow_id)
        chosen = self.viewed_gateway(flow_id, gateway_id, running)
        shown = running.get(chosen or "", {})
        return {"flow": flow_id, "gateway": chosen, "deployed_version": shown.get("version"),
                "nodes": shown.get("nodes", []), "gateways": running,
                "targets": self.fleet.assignments(flow_id)}  # fmt: skip

    # -- drafts and approvals: how an agent changes a flow without touching what runs ----------------------

    APPROVAL_TTL_S = 15 * 60
    ACTIONS = ("apply", "deploy")
    FLEET_ACTIONS = ("assign", "rollback")  # approved by their exact arguments, not by a draft

    def draft(self, flow_id: str) -> tuple[dict[str, Any], str | None]:
        """The flow's draft and its last editor; without a draft, the latest saved version (editor None)."""
        found = self.store.draft(flow_id)
        if found is not None:
            return found
        return self.store.get_flow(flow_id).document, None

    async def edit_draft(self, flow_id: str, user: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `change` to a copy of the flow's draft; keep it only if it adds no problem besides unwired inputs
        (a flow is built a node at a time). FlowInvalid with just the problems the change added."""
        document, _editor = self.draft(flow_id)
        before = {(p.code, p.pointer, p.message) for p in await self.problems(parse_flow(document))}
        edited = copy.deepcopy(document)
        change(edited)
        checked = parse_flow(edited)
        after = await self.problems(checked)
        new = [p for p in after if (p.code, p.pointer, p.message) not in before
               and p.code not in ("dangling_port", MORE_PROBLEMS)]  # fmt: skip
        if new:
            raise FlowInvalid(new)
        self.put_draft(checked.model_dump(by_alias=True), user)
        return {"flow": flow_id, "draft": "saved", "nodes": [n.id for n in checked.nodes],
                "edges": [f"{e.source} -> {e.target}" for e in checked.edges],
                "still_to_do": [p.to_dict() for p in after]}  # fmt: skip

    def put_draft(self, document: dict[str, Any], user: str) -> FlowDocument:
        """Keep an edited document as the flow's draft: structurally valid, never the running flow."""
        checked = validate_flow(document)
        self.store.put_draft(checked.id, checked.model_dump(by_alias=True), user)
        return checked

    async def suggestion(self, flow_id: str) -> dict[str, Any]:
        """The draft against what runs (or the latest save, if nothing runs): the change a human approves."""
        document, editor = self.draft(flow_id)
        summary = next((f for f in self.store.list_flows() if f["id"] == flow_id), None)
        base_version = (summary["deployed_version"] or summary["version"]) if summary else None
        draft = validate_flow(document)
        base = validate_flow(self.store.get_flow(flow_id, base_version).document) if base_version else None
        if base is None:
            against = "nothing (a new flow)"
        else:
            against = f"{'deployed' if summary and summary['deployed_version'] else 'saved'} version {base_version}"
        empty = FlowDocument(id=draft.id)
        return {"flow": flow_id, "change_digest": change_digest(document), "edited_by": editor, "against": against,
                "diff": diff_flows(base or empty, draft).to_dict(),
                "problems": [p.to_dict() for p in await self.problems(draft)]}  # fmt: skip

    def approve_fleet_action(self, flow_id: str, action: str, arguments: dict[str, Any], approver: str,
                             digest: str | None = None) -> dict[str, Any]:  # fmt: skip
        """A human's approval of one fleet action on a flow (assign a version to a target, roll a gateway back),
        bound to exactly the arguments the human sent."""
        computed = fleet_digest(action, flow_id, arguments)
        if digest is not None and digest != computed:
            raise ApiError(409, "change_moved", f"those arguments are change {computed[:12]}, not {digest[:12]}: "
                           "approve what the agent proposed, or ask it for the new digest")  # fmt: skip
        token = self.store.issue_approval(flow_id, computed, action, approver, self.APPROVAL_TTL_S)
        return {"approval_token": token, "flow": flow_id, "action": action, "change_digest": computed,
                "arguments": arguments, "expires_in_s": self.APPROVAL_TTL_S,
                "note": "single-use; shown once"}  # fmt: skip

    def spend_fleet_approval(self, flow_id: str, action: str, arguments: dict[str, Any], token: str,
                             caller: str) -> str:  # fmt: skip
        approved_by = self.store.use_approval(token, flow_id, fleet_digest(action, flow_id, arguments), action)
        if approved_by == caller:
            raise ApiError(403, "self_approval", f"{caller!r} approved this change and cannot also carry it out")
        return approved_by

    async def approve(self, flow_id: str, action: str, digest: str, approver: str,
                      target: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """A human's approval of one exact change; never the change's own author. A deploy's approval may name
        where it goes (`target`: {"gateway": id} or {"labels": {...}}): the agent must then deploy exactly there."""
        if action not in self.ACTIONS:
            raise ApiError(422, "invalid", f"action must be one of {list(self.ACTIONS + self.FLEET_ACTIONS)}")
        suggestion = await self.suggestion(flow_id)
        if suggestion["change_digest"] != digest:
            raise ApiError(409, "change_moved", f"the draft of {flow_id!r} is now change "
                           f"{suggestion['change_digest'][:12]}, not {digest[:12]}: review it again")  # fmt: skip
        if suggestion["edited_by"] == approver:
            raise ApiError(403, "self_approval", f"{approver!r} edited this draft and cannot approve it; "
                           "another Engineer or Admin must")  # fmt: skip
        token = self.store.issue_approval(flow_id, bound_digest(digest, target), action, approver, self.APPROVAL_TTL_S)
        return {"approval_token": token, "flow": flow_id, "action": action, "change_digest": digest,
                **({"target": target} if target else {}), "expires_in_s": self.APPROVAL_TTL_S,
                "note": "single-use; shown once"}  # fmt: skip

    def spend_approval(self, flow_id: str, action: str, token: str, caller: str,
                       target: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:  # fmt: skip
        """Check an approval against the draft as it is now (and the target it named), then use it up; returns
        the draft and approver."""
        document, _editor = self.draft(flow_id)
        approved_by = self.store.use_approval(token, flow_id, bound_digest(change_digest(document), target), action)
        if approved_by == caller:
            raise ApiError(403, "self_approval", f"{caller!r} approved this change and cannot also apply it")
        return document, approved_by

    async def apply_draft(self, flow_id: str, document: dict[str, Any], user: str) -> FlowVersion:
        """Save the draft as the flow's next version (a new flow's first); the draft is then gone."""
        checked = validate_flow(document)
        await self.plan(checked.model_dump(by_alias=True))  # FlowInvalid: every problem, nothing saved
        exists = any(f["id"] == flow_id for f in self.store.list_flows())
        saved = self.save(checked, self.store.get_flow(flow_id).version if exists else None, user)
        self.store.delete_draft(flow_id)
        return saved
