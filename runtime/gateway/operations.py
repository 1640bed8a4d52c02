"""What an operator asks of a gateway through the control plane: dead letters, reprocessing, logs, node restarts;
and the alarm uplink that keeps the control plane's alarm store in step with the gateway's alarm topics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from streamforge.engine.records import json_safe
from streamforge.engine.retry import Backoff
from streamforge.engine.serde import Decoder
from streamforge.runtime.errors import ApiError
from streamforge.runtime.gateway.dlq import DeadLetters
from streamforge.runtime.gateway.gateway import Gateway
from streamforge.runtime.gateway.overflow import SYSTEM_FLOW
from streamforge.runtime.kafka.clients import BatchConsumer, recent_records
from streamforge.runtime.logs import LogQuery, LogRing

log = logging.getLogger("streamforge.runtime")

ALARM_TOPICS = r"^alarms\..*"
UPLINK_BATCH = 500
RECENT_LIMIT = 5000


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(422, "invalid", f"`{name}` is required")
    return value


class GatewayOperations:
    """One entry point per operation, by name (`dlq.list`, `dlq.approve`, `dlq.revalidate`, `dlq.job`, `logs`,
    `node.restart`); each takes a JSON object and answers one, or raises ApiError saying what was wrong."""

    def __init__(self, gateway: Gateway, logs: LogRing, gateway_id: Callable[[], str]) -> None:
        self.gateway, self.logs = gateway, logs
        self.dead_letters = DeadLetters(gateway, gateway_id)
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "dlq.list": self.dead_letters.listing,
            "dlq.approve": self._approve,
            "dlq.revalidate": self._revalidate,
            "dlq.job": self._job,
            "logs": self._logs,
            "node.restart": self._restart,
            "records.recent": self._recent,
        }

    async def run(self, operation: str, args: Any) -> Any:
        handler = self._handlers.get(operation)
        if handler is None:
            raise ApiError(404, "not_found", f"no gateway operation {operation!r}; known: {', '.join(self._handlers)}")
        if not isinstance(args, dict):
            raise ApiError(400, "bad_request", "an operation's arguments are a JSON object")
        return await handler(args)

    async def _approve(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.dead_letters.start("approve", args, _text(args, "user"))

    async def _revalidate(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.dead_letters.start("revalidate", args, _text(args, "user"))

    async def _job(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.dead_letters.job(_text(args, "job"))

    async def _logs(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            query = LogQuery.parse(args)
        except ValueError as wrong:
            raise ApiError(422, "invalid", str(wrong)) from None
        lines = await asyncio.to_thread(self.logs.query, query)
        return {"lines": lines, "limit": query.limit}

    async def _recent(self, args: dict[str, Any]) -> dict[str, Any]:
        """The newest records of one of this gateway's topics (MCP's analyses), payloads left out."""
        topic, limit = _text(args, "topic"), args.get("limit", 100)
        if not isinstance(limit, int) or not 1 <= limit <= RECENT_LIMIT:
            raise ApiError(422, "invalid", f"`limit` is a whole number from 1 to {RECENT_LIMIT}")
        rows = await recent_records(self.gateway.env.kafka, topic, Decoder(self.gateway.env.registry), limit)
        return {"topic": topic, "records": [json_safe({k: v for k, v in record.items() if k != "payload"})
                                            for _ts, _partition, record in rows]}  # fmt: skip

    async def _restart(self, args: dict[str, Any]) -> dict[str, Any]:
        return await self.gateway.restart_node(_text(args, "flow"), _text(args, "node"), _text(args, "user"))


async def prune_logs(ring: LogRing, every_s: float = 600.0) -> None:
    """Keep the log ring within its size and age bounds, forever."""
    while True:
        removed = await asyncio.to_thread(ring.prune)
        if removed:
            log.info("log ring pruned", extra={"files_removed": removed})
        await asyncio.sleep(every_s)


def _event(message: Any) -> dict[str, Any]:
    headers = message.headers
    return {"flow": headers.get("sf-flow", b"").decode(), "node": headers.get("sf-node", b"").decode(),
            "topic": message.topic, "partition": message.partition, "offset": message.offset,
            "record": json_safe(message.record)}  # fmt: skip


async def alarm_uplink(
    gateway: Gateway, gateway_id: str, post: Callable[[list[dict[str, Any]]], Awaitable[None]]
) -> None:
    """Every alarm transition of the local `alarms.*` topics, to the control plane, forever.

    Guarantee: at least once, in order per alarm. A batch's offsets are committed only after the control plane
    stored it (`post` returned); until then it is retried with backoff, so a control plane away for days gets every
    transition once it is back (alarm topics are never evicted). The control plane keys them by event id, so a
    replay after a crash changes nothing. Only the flows this gateway runs or has deployed (one still starting its
    nodes included) and its own (the disk budget's) are sent: another gateway on the same Kafka cluster sends its
    own."""
    consumer = BatchConsumer(gateway.env.kafka, f"streamforge.{gateway_id}.uplink.alarms", [],
                             Decoder(gateway.env.registry), max_poll_records=UPLINK_BATCH)  # fmt: skip
    await consumer.start()
    consumer.consumer.subscribe(pattern=ALARM_TOPICS)
    try:
        while True:
            batch = await consumer.next_batch(timeout_ms=200)
            flows = (*gateway.flows_here, SYSTEM_FLOW)
            ours = [message for message in batch.records if message.headers.get("sf-flow", b"").decode() in flows]
            if ours:
                backoff = Backoff(1.0, 30.0)
                while True:
                    try:
                        await post([_event(message) for message in ours])
                        break
                    except Exception as failed:  # the control plane away or refusing: hold the position, retry
                        error = f"{type(failed).__name__}: {failed}"
                        log.warning("alarm uplink: control plane did not take the alarms; retrying",
                                    extra={"records": len(ours), "error": error})  # fmt: skip
                        await asyncio.sleep(backoff.next_delay())
            await consumer.commit(batch)
    finally:
        await consumer.stop()
