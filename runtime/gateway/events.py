"""The gateway's side of its events socket (the link it opens to the control plane): it answers commands, streams
debug taps from its own Kafka, and pushes its metrics and log lines; every message is a runtime/protocol model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from streamforge.engine.records import json_safe
from streamforge.engine.serde import Decoder
from streamforge.runtime.errors import ApiError
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.gateway.metrics import node_counters
from streamforge.runtime.gateway.operations import GatewayOperations
from streamforge.runtime.http_guard import log_unexpected
from streamforge.runtime.kafka.clients import BatchConsumer
from streamforge.runtime.logs import LogTail
from streamforge.runtime.protocol import (
    LOGS_PUSH_LINES,
    LOGS_PUSH_S,
    METRICS_PUSH_S,
    PROTOCOL,
    TAP_RECORDS_PER_S,
    TO_GATEWAY,
    CommandReply,
    CommandRequest,
    ErrorBody,
    LogsPush,
    MetricsPush,
    NodeCounters,
    PollNotice,
    TapCancel,
    TapEnded,
    TapRecord,
    TapRequest,
    TapStarted,
)

log = logging.getLogger("streamforge.gateway.sync")
LOGS_PUSH_ROUNDS = 10  # at most this many LogsPush messages a round: a burst catches up over a few rounds


def _error(exc: ApiError) -> ErrorBody:
    return ErrorBody(status=exc.status, code=exc.code, message=exc.message)


class EventsChannel:
    """One connection of the events socket; `serve()` until it closes. Its tasks (commands being run, taps,
    pushes) end with it; the log tail outlives it, so lines written while the link was down go at the next one."""

    def __init__(self, send_text: Callable[[str], Awaitable[None]], gateway: Gateway, operations: GatewayOperations,
                 logs: LogTail, poll_now: Callable[[], None]) -> None:  # fmt: skip
        self._send_text, self.gateway, self.operations, self.logs = send_text, gateway, operations, logs
        self.poll_now = poll_now
        self._tasks: set[asyncio.Task[None]] = set()
        self._taps: dict[str, asyncio.Task[None]] = {}

    async def send(self, message: BaseModel) -> None:
        await self._send_text(message.model_dump_json(exclude_none=True))

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def serve(self, messages: Any) -> None:
        """Read the control plane's messages (an async iterator of text) until the socket closes."""
        self._spawn(self._push_metrics())
        self._spawn(self._push_logs())
        try:
            async for raw in messages:
                self.handle(raw)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def handle(self, raw: str | bytes) -> None:
        try:
            message = TO_GATEWAY.validate_json(raw)
        except ValidationError as unknown:  # a newer control plane's message: say so if it waits for an answer
            with contextlib.suppress(ValueError):
                waiting = json.loads(raw)
                if isinstance(waiting, dict) and isinstance(waiting.get("id"), str) and waiting["id"]:
                    reply = CommandReply(protocol=PROTOCOL, id=waiting["id"], error=ErrorBody(
                        status=501, code="unsupported", message=f"this gateway speaks fleet protocol {PROTOCOL} and "
                        f"does not know {waiting.get('type')!r}: upgrade it"))  # fmt: skip
                    self._spawn(self.send(reply))
            log.info("unknown message on the events socket", extra={"error": str(unknown)[:200]})
            return
        if isinstance(message, PollNotice):
            self.poll_now()
        elif isinstance(message, CommandRequest):
            self._spawn(self._command(message))
        elif isinstance(message, TapRequest):
            if message.id not in self._taps:
                self._taps[message.id] = self._spawn(self._tap(message))
        elif isinstance(message, TapCancel):
            tap = self._taps.pop(message.id, None)
            if tap is not None:
                tap.cancel()

    async def _command(self, command: CommandRequest) -> None:
        try:
            if command.op is not None:
                result = await self.operations.run(command.op, command.args)
            else:
                result = await self.gateway.command(str(command.flow), str(command.node), str(command.name),
                                                    command.args)  # fmt: skip
            reply = CommandReply(protocol=PROTOCOL, id=command.id, result=json_safe(result))
        except ApiError as refused:
            reply = CommandReply(protocol=PROTOCOL, id=command.id, error=_error(refused))
        except Exception as failed:  # a bug: still answered (the control plane would wait out its timeout), logged once
            error_id = log_unexpected(failed, "COMMAND", str(command.op or command.name))
            message = f"the gateway failed unexpectedly; it logged {error_id}"
            reply = CommandReply(protocol=PROTOCOL, id=command.id,
                                 error=ErrorBody(status=500, code="internal", message=message))  # fmt: skip
        await self.send(reply)

    async def _tap(self, request: TapRequest) -> None:
        """A bounded sample (TAP_RECORDS_PER_S) of one deployed output's records, from now on."""
        try:
            plan = self.gateway.plans.get(request.flow)
            node = next((n for n in plan.nodes if n.node_id == request.node), None) if plan else None
            output = next((o for o in node.outputs if o.port == request.port), None) if node else None
            if output is None:
                await self.send(TapEnded(protocol=PROTOCOL, id=request.id, message=f"no deployed output "
                                         f"{request.flow}/{request.node}:{request.port} on this gateway: deploy the "
                                         "flow, then tap"))  # fmt: skip
                return
            consumer = BatchConsumer(self.gateway.env.kafka, None, [output.topic],
                                     Decoder(self.gateway.env.registry),
                                     upstream=[(request.flow, request.node)])  # fmt: skip
            await consumer.start()
            try:
                await consumer.start_at_end()  # "tapped" then means every record from now on
                await self.send(TapStarted(protocol=PROTOCOL, id=request.id, topic=output.topic))
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
                        await self.send(TapRecord(protocol=PROTOCOL, id=request.id, offset=message.offset,
                                                  dropped=dropped, record=json_safe(message.record)))  # fmt: skip
            finally:
                await consumer.stop()
        except (OSError, RuntimeError, ValueError) as failed:  # the link's own failures end serve() instead
            with contextlib.suppress(Exception):
                await self.send(TapEnded(protocol=PROTOCOL, id=request.id, message=f"the tap failed: {failed}"))
        finally:
            self._taps.pop(request.id, None)

    async def _push_metrics(self) -> None:
        while True:
            exposition, taken, now = self.gateway.exposition(), self.gateway.counters_taken(), time.time()
            nodes = {key: NodeCounters(**counters, at=taken.get(key, now))
                     for key, counters in node_counters(exposition).items()}  # fmt: skip
            await self.send(MetricsPush(protocol=PROTOCOL, at=now, exposition=exposition.decode(), nodes=nodes))
            await asyncio.sleep(METRICS_PUSH_S)

    async def _push_logs(self) -> None:
        while True:
            for _ in range(LOGS_PUSH_ROUNDS):
                lines = await asyncio.to_thread(self.logs.new_lines, LOGS_PUSH_LINES)
                if not lines:
                    break
                await self.send(LogsPush(protocol=PROTOCOL, lines=lines))
            await asyncio.sleep(LOGS_PUSH_S)
