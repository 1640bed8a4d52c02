"""The live websocket: node status pushed every second, and debug taps (a bounded sample of a port's records)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from streamforge.engine.compiler import compile_document
from streamforge.engine.node_types import NodeTypes
from streamforge.engine.records import json_safe
from streamforge.engine.serde import Decoder
from streamforge.runtime.control_plane.gateway_link import GatewayLink
from streamforge.runtime.control_plane.store import Store
from streamforge.runtime.errors import ApiError
from streamforge.runtime.kafka.clients import BatchConsumer

TAP_RECORDS_PER_S = 20  # a debug panel is for eyes: a bounded sample, never a firehose
UNAUTHORIZED = 4401  # websocket close codes 4000-4999 are the application's


class LiveSession:
    """One browser tab: the subscriptions it asked for, each a task, all cancelled when it goes."""

    def __init__(self, socket: WebSocket, gateway: GatewayLink, store: Store, node_types: NodeTypes) -> None:
        self.socket, self.gateway, self.store, self.node_types = socket, gateway, store, node_types
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._send = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send:
            await self.socket.send_json(message)

    def start(self, key: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if key not in self.tasks or self.tasks[key].done():
            self.tasks[key] = asyncio.create_task(loop())

    async def stop(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def status(self) -> None:
        """The gateway's health and each node's rates (the canvas's status line), every second."""
        while True:
            try:
                rates = await self.gateway.rates()
            except ApiError:  # not reported yet, or its metrics out of reach: the badges still update
                rates = {}
            await self.send({"type": "status", **self.gateway.health(), "rates": rates})
            await asyncio.sleep(1)

    async def tap(self, flow: str, node: str, port: str) -> None:
        version = self.gateway.running_version(flow)
        output = None
        if version is not None:  # the outputs of what the gateway runs, compiled here (no secret is read)
            plan = compile_document(self.store.get_flow(flow, version).document, self.node_types)
            output = next((o for n in plan.nodes if n.node_id == node for o in n.outputs if o.port == port), None)
        if output is None:
            why = f"no deployed output {flow}/{node}:{port}: deploy the flow, then tap"
            await self.send({"type": "tap_refused", "flow": flow, "node": node, "port": port, "message": why})
            return
        consumer = BatchConsumer(self.gateway.bootstrap, None, [output.topic], Decoder(self.gateway.registry),
                                 upstream=[(flow, node)])  # fmt: skip
        await consumer.start()
        await consumer.start_at_end()  # "tapped" then means every record from now on
        await self.send({"type": "tapped", "flow": flow, "node": node, "port": port, "topic": output.topic})
        try:
            second, sent, dropped = int(time.monotonic()), 0, 0
            while True:
                batch = await consumer.next_batch(timeout_ms=500)
                for message in batch.records:
                    if int(time.monotonic()) != second:
                        second, sent = int(time.monotonic()), 0
                    if sent >= TAP_RECORDS_PER_S:
                        dropped += 1
                        continue
                    sent += 1
                    record = json_safe(message.record)
                    await self.send({"type": "record", "flow": flow, "node": node, "port": port,
                                     "offset": message.offset, "dropped": dropped, "record": record})  # fmt: skip
        finally:
            await consumer.stop()

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def _port_of(message: dict[str, Any]) -> tuple[str, str, str]:
    return str(message.get("flow", "")), str(message.get("node", "")), str(message.get("port", ""))


def live_endpoint(
    store: Store, node_types: NodeTypes, gateway: GatewayLink | None
) -> Callable[[WebSocket], Coroutine[Any, Any, None]]:
    """`/api/v1/live?token=...`: send {"subscribe": "status"}, {"tap": {"flow", "node", "port"}} or {"untap": ...}."""

    async def live(socket: WebSocket) -> None:
        token = socket.query_params.get("token", "")
        await socket.accept()  # accept first, so the client gets a close code that says why
        if gateway is None or not token or store.token_user(token) is None:
            await socket.close(code=UNAUTHORIZED, reason="a valid ?token= is required")
            return
        session = LiveSession(socket, gateway, store, node_types)
        try:
            while True:
                message = await socket.receive_json()
                if message.get("subscribe") == "status":
                    session.start("status", session.status)
                elif isinstance(message.get("tap"), dict):
                    flow, node, port = _port_of(message["tap"])
                    session.start(f"tap {flow}/{node}:{port}", functools.partial(session.tap, flow, node, port))
                elif isinstance(message.get("untap"), dict):  # the tab stops watching: its records stop too
                    flow, node, port = _port_of(message["untap"])
                    await session.stop(f"tap {flow}/{node}:{port}")
                    await session.send({"type": "untapped", "flow": flow, "node": node, "port": port})
                else:
                    await session.send({"type": "error", "message": "send {\"subscribe\": \"status\"}, "
                                        "{\"tap\": {\"flow\", \"node\", \"port\"}} or {\"untap\": {...}}"})  # fmt: skip
        except (WebSocketDisconnect, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await session.close()

    return live
