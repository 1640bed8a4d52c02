"""Flow operations shared by the REST API and the MCP tools: one place that saves, checks, diffs and deploys."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

from streamforge.engine.compiler import compile_document
from streamforge.engine.flow import FlowDiff, FlowDocument, diff_flows, parse_flow, validate_flow
from streamforge.engine.node_types import NodeTypes
from streamforge.engine.problems import FlowInvalid, Problem
from streamforge.engine.sdk import Kind
from streamforge.engine.secrets import externalize
from streamforge.runtime.control_plane.gateway_link import GatewayLink
from streamforge.runtime.control_plane.operations import action_digest
from streamforge.runtime.control_plane.store import FlowVersion, Store
from streamforge.runtime.errors import ApiError

DEPLOY_TIMEOUT_S = 120.0  # how long a deploy waits for its gateways to acknowledge the new version


def change_digest(document: dict[str, Any]) -> str:
    """Identifies one exact change: what an approval is bound to (version and canvas positions excluded)."""
    significant = {"id": document.get("id"), "label": document.get("label"),
                   "nodes": sorted(({k: v for k, v in n.items() if k not in ("x", "y")} for n in document["nodes"]),
                                   key=lambda n: str(n.get("id"))),
                   "edges": sorted((e["from"], e["to"]) for e in document["edges"])}  # fmt: skip
    return hashlib.sha256(json.dumps(significant, sort_keys=True).encode()).hexdigest()


def fleet_digest(action: str, flow_id: str, arguments: dict[str, Any]) -> str:
    """Identifies one fleet action exactly: what its approval is bound to."""
    return action_digest(action, {"flow": flow_id, **arguments})


def placement(document: FlowDocument, kind: Kind, after: str | None) -> tuple[float, float]:
    """Where a new node goes on the canvas: right of `after`, else in its kind's column, below what is there."""
    columns = {Kind.SOURCE: 40.0, Kind.PROCESSOR: 360.0, Kind.SINK: 1000.0}
    anchor = document.node(after) if after else None
    x = anchor.x + 320 if anchor else columns[kind]
    y = anchor.y if anchor else 80.0
    while any(abs(n.x - x) < 200 and abs(n.y - y) < 120 for n in document.nodes):
        y += 140
    return x, y


class FlowService:
    """The control plane's flow operations, with the store, the node types and the gateway a deploy goes to by
    default (in `streamforge up`, the local one; it is reached only through the fleet, like any other)."""

    def __init__(self, store: Store, node_types: NodeTypes, gateway: GatewayLink | None) -> None:
        self.store, self.node_types, self.gateway = store, node_types, gateway

    def problems(self, document: FlowDocument) -> list[Problem]:
        """What a deploy would refuse, checked with stand-ins for secrets (no secret is read to validate)."""
        try:
            compile_document(document.model_dump(by_alias=True), self.node_types)
        except FlowInvalid as invalid:
            return invalid.problems
        return []

    def changes(self, flow_id: str, document: Any) -> dict[str, Any]:
        """What deploying `document` would restart, against what runs: the compiler's fingerprints, the definition
        the gateway deploys by (a rename restarts nothing, a rewire restarts the node). With `problems` when it
        would not deploy; `modified` is then null."""
        summary = next((f for f in self.store.list_flows() if f["id"] == flow_id), None)
        deployed_version = summary["deployed_version"] if summary else None
        before = (compile_document(self.store.get_flow(flow_id, deployed_version).document, self.node_types)
                  if deployed_version is not None else None)  # fmt: skip
        running = {node.node_id for node in before.nodes} if before else set()
        try:
            after = compile_document(document if isinstance(document, dict) else {}, self.node_types)
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

    def import_flow(self, document: FlowDocument, user: str) -> FlowVersion:
        """All or nothing: the document is checked whole, compile included; a bad import stores nothing."""
        problems = self.problems(document)
        if problems:
            raise FlowInvalid(problems)
        existing = next((f for f in self.store.list_flows() if f["id"] == document.id), None)
        return self.save(document, existing["version"] if existing else None, user)

    def diff(self, flow_id: str, old: int, new: int) -> FlowDiff:
        before = validate_flow(self.store.get_flow(flow_id, old).document)
        after = validate_flow(self.store.get_flow(flow_id, new).document)
        return diff_flows(before, after)

    def restore(self, flow_id: str, version: int, user: str) -> FlowVersion:
        old = self.store.get_flow(flow_id, version)
        current = self.store.get_flow(flow_id)
        return self.store.save_flow({**old.document, "version": current.version}, current.version, user)

    def running_gateway(self) -> GatewayLink:
        if self.gateway is None:
            raise ApiError(503, "no_gateway", "no gateway is attached to this control plane")
        return self.gateway

    async def deploy(self, flow_id: str, mode: str = "modified", user: str = "streamforge") -> dict[str, Any]:
        """Deploy the latest version: assign it wherever the flow is assigned (default: this control plane's
        gateway) and wait for the gateways to acknowledge it. A flow that does not compile raises FlowInvalid
        and touches nothing; a gateway that rolled it back answers 409 with its located cause."""
        link = self.running_gateway()
        fleet = link.fleet
        if mode not in ("modified", "full"):
            raise ApiError(422, "invalid", "mode must be `modified` or `full`")
        version = self.store.get_flow(flow_id)
        compile_document(version.document, self.node_types, self.store.secret)
        targets = [(a["target"], None) if a["target_kind"] == "gateway" else (None, a["labels"])
                   for a in fleet.assignments(flow_id)] or [(link.gateway_id, None)]  # fmt: skip
        covered = set().union(*(fleet.covered(gateway_id, labels) for gateway_id, labels in targets))
        waiter = fleet.waiter(flow_id, version.version, covered)
        for gateway_id, labels in targets:
            fleet.assign(flow_id, version.version, user, gateway_id, labels, restart=mode == "full")
        results = await fleet.wait(waiter, DEPLOY_TIMEOUT_S)
        local = results.get(link.gateway_id)
        if local is None:
            raise ApiError(504, "deploy_pending", f"flow {flow_id} v{version.version} is assigned, but gateway "
                           f"{link.gateway_id} did not acknowledge it within {DEPLOY_TIMEOUT_S:.0f} s; it applies it "
                           "when it next syncs")  # fmt: skip
        if local["result"] != "APPLIED":
            raise ApiError(409, "deploy_rolled_back", f"deploy of flow {flow_id} v{version.version} rolled back on "
                           f"gateway {link.gateway_id}: {local.get('cause')}")  # fmt: skip
        self.store.mark_deployed(flow_id, version.version)
        report = local.get("reports", {}).get(flow_id) or {"started": [], "stopped": [], "unchanged": []}
        return {"flow": flow_id, "version": version.version, "started": report.get("started", []),
                "stopped": report.get("stopped", []), "unchanged": report.get("unchanged", []),
                "gateways": {g: r["result"] for g, r in results.items()}}  # fmt: skip

    def status(self, flow_id: str) -> dict[str, Any]:
        gateway = self.gateway
        nodes = [n for n in gateway.node_health() if n["flow"] == flow_id] if gateway else []
        return {"flow": flow_id, "deployed_version": gateway.running_version(flow_id) if gateway else None,
                "nodes": nodes}  # fmt: skip

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

    def edit_draft(self, flow_id: str, user: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `change` to a copy of the flow's draft; keep it only if it adds no problem besides unwired inputs
        (a flow is built a node at a time). FlowInvalid with just the problems the change added."""
        document, _editor = self.draft(flow_id)
        before = {(p.code, p.pointer, p.message) for p in self.problems(parse_flow(document))}
        edited = copy.deepcopy(document)
        change(edited)
        checked = parse_flow(edited)
        after = self.problems(checked)
        new = [p for p in after if (p.code, p.pointer, p.message) not in before and p.code != "dangling_port"]
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

    def suggestion(self, flow_id: str) -> dict[str, Any]:
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
                "problems": [p.to_dict() for p in self.problems(draft)]}  # fmt: skip

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

    def approve(self, flow_id: str, action: str, digest: str, approver: str) -> dict[str, Any]:
        """A human's approval of one exact change; never the change's own author."""
        if action not in self.ACTIONS:
            raise ApiError(422, "invalid", f"action must be one of {list(self.ACTIONS + self.FLEET_ACTIONS)}")
        suggestion = self.suggestion(flow_id)
        if suggestion["change_digest"] != digest:
            raise ApiError(409, "change_moved", f"the draft of {flow_id!r} is now change "
                           f"{suggestion['change_digest'][:12]}, not {digest[:12]}: review it again")  # fmt: skip
        if suggestion["edited_by"] == approver:
            raise ApiError(403, "self_approval", f"{approver!r} edited this draft and cannot approve it; "
                           "another Engineer or Admin must")  # fmt: skip
        token = self.store.issue_approval(flow_id, digest, action, approver, self.APPROVAL_TTL_S)
        return {"approval_token": token, "flow": flow_id, "action": action, "change_digest": digest,
                "expires_in_s": self.APPROVAL_TTL_S, "note": "single-use; shown once"}  # fmt: skip

    def spend_approval(self, flow_id: str, action: str, token: str, caller: str) -> tuple[dict[str, Any], str]:
        """Check an approval against the draft as it is now, then use it up; returns the draft and approver."""
        document, _editor = self.draft(flow_id)
        approved_by = self.store.use_approval(token, flow_id, change_digest(document), action)
        if approved_by == caller:
            raise ApiError(403, "self_approval", f"{caller!r} approved this change and cannot also apply it")
        return document, approved_by

    def apply_draft(self, flow_id: str, document: dict[str, Any], user: str) -> FlowVersion:
        """Save the draft as the flow's next version (a new flow's first); the draft is then gone."""
        checked = validate_flow(document)
        problems = self.problems(checked)
        if problems:
            raise FlowInvalid(problems)
        exists = any(f["id"] == flow_id for f in self.store.list_flows())
        saved = self.save(checked, self.store.get_flow(flow_id).version if exists else None, user)
        self.store.delete_draft(flow_id)
        return saved
