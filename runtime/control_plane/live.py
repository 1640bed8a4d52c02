"""The live websocket: a gateway's status pushed every second, and debug taps (a bounded sample of a port's records
that the gateway streams from its own Kafka over the link it opened)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from streamforge.engine.json_input import JsonRefused, parse_json
from streamforge.runtime.control_plane.auth import authenticate_token
from streamforge.runtime.control_plane.service import FlowService
from streamforge.runtime.errors import ApiError
from streamforge.runtime.protocol import TapEnded, TapRecord, TapStarted

UNAUTHORIZED = 4401  # websocket close codes 4000-4999 are the application's
USAGE = 'send {"subscribe": "status", "gateway"?}, {"tap": {"flow", "node", "port", "gateway"?}} or {"untap": {...}}'


async def receive_message(socket: WebSocket) -> Any:
    """The next message (a text or binary frame) as strict JSON; WebSocketDisconnect once the peer is gone,
    JsonRefused (saying why) for a message that is not JSON or nests too deep."""
    message = await socket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    return parse_json(text if text is not None else message.get("bytes") or b"")


class LiveSession:
    """One browser tab: the subscriptions it asked for, each a task, all cancelled when it goes."""

    def __init__(self, socket: WebSocket, flows: FlowService) -> None:
        self.socket, self.flows, self.fleet = socket, flows, flows.fleet
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._send = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send:
            await self.socket.send_json(message)

    def start(self, key: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if key in self.tasks and not self.tasks[key].done():
            self.tasks[key].cancel()
        self.tasks[key] = asyncio.create_task(loop())

    async def stop(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def status(self, gateway: str | None, flow: str | None) -> None:
        """A gateway's health and each node's rates (the canvas's status line), every second: the gateway named,
        else the first running `flow` (as the flow's status shows it); none yet is said, not an error."""
        while True:
            try:
                chosen = self.flows.viewed_gateway(flow, gateway)
                if chosen is None:
                    raise ApiError(409, "not_running", f"no gateway runs flow {flow} yet: deploy it" if flow else
                                   "no gateway is approved yet")  # fmt: skip
                await self.send({"type": "status", **self.fleet.live_view(chosen)})
            except ApiError as refused:
                await self.send({"type": "status", "gateway": None, "status": "UNKNOWN", "nodes": [], "rates": {},
                                 "flows": {}, "kafka": {"status": "UNKNOWN"}, "message": refused.message})  # fmt: skip
            await asyncio.sleep(1)

    async def tap(self, gateway: str | None, flow: str, node: str, port: str) -> None:
        where = {"flow": flow, "node": node, "port": port}
        try:
            tap = self.fleet.open_tap(self.fleet.pick(gateway, flow), flow, node, port)
        except ApiError as refused:
            await self.send({"type": "tap_refused", **where, "message": refused.message})
            return
        where["gateway"] = tap.gateway_id
        try:
            while True:
                message = await tap.messages.get()
                if isinstance(message, TapStarted):
                    await self.send({"type": "tapped", **where, "topic": message.topic})
                elif isinstance(message, TapRecord):
                    await self.send({"type": "record", **where, "offset": message.offset, "dropped": message.dropped,
                                     "record": message.record})  # fmt: skip
                elif isinstance(message, TapEnded):
                    await self.send({"type": "tap_refused", **where, "message": message.message})
                    return
        finally:
            self.fleet.close_tap(tap)

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


def _port_of(message: dict[str, Any]) -> tuple[str | None, str, str, str]:
    gateway = message.get("gateway")
    return (gateway if isinstance(gateway, str) and gateway else None, str(message.get("flow", "")),
            str(message.get("node", "")), str(message.get("port", "")))  # fmt: skip


def live_endpoint(flows: FlowService) -> Callable[[WebSocket], Coroutine[Any, Any, None]]:
    """`/api/v1/live?token=...`: send {"subscribe": "status", "gateway"?, "flow"?},
    {"tap": {"flow", "node", "port", "gateway"?}} or {"untap": ...}."""

    async def live(socket: WebSocket) -> None:
        token = socket.query_params.get("token", "")
        await socket.accept()  # accept first, so the client gets a close code that says why
        try:
            authenticate_token(flows.store, token)
        except ApiError as refused:
            await socket.close(code=UNAUTHORIZED, reason=f"a valid ?token= is required: {refused.message}"[:120])
            return
        session = LiveSession(socket, flows)
        try:
            while True:
                try:
                    message = await receive_message(socket)
                except JsonRefused as refused:  # a bad message is answered; the socket and its taps stay
                    await session.send({"type": "error", "message": f"{refused}; {USAGE}"})
                    continue
                if not isinstance(message, dict):
                    message = {}
                if message.get("subscribe") == "status":
                    gateway, flow = _port_of(message)[:2]
                    session.start("status", functools.partial(session.status, gateway, flow or None))
                elif isinstance(message.get("tap"), dict):
                    gateway, flow, node, port = _port_of(message["tap"])
                    session.start(f"tap {flow}/{node}:{port}", functools.partial(session.tap, gateway, flow, node,
                                                                                  port))  # fmt: skip
                elif isinstance(message.get("untap"), dict):  # the tab stops watching: its records stop too
                    _, flow, node, port = _port_of(message["untap"])
                    await session.stop(f"tap {flow}/{node}:{port}")
                    await session.send({"type": "untapped", "flow": flow, "node": node, "port": port})
                else:
                    await session.send({"type": "error", "message": USAGE})
        except WebSocketDisconnect:
            pass
        finally:
            with contextlib.suppress(Exception):
                await session.close()

    return live
