"""MQTT load for the tests and the benchmarks: fast QoS 1 publishing, and an offer held at a multiple of what
the pipeline drains, with the broker's queue watched through Mosquitto's $SYS topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import aiomqtt

WINDOW = 500  # publishes awaited together: Mosquitto acknowledges each, this keeps the socket busy


async def publish_all(client: aiomqtt.Client, messages: Iterable[tuple[str, bytes]], qos: int = 1) -> int:
    """Publish every message at `qos`, WINDOW at a time; returns once Mosquitto acknowledged all of them."""
    pending: list[Awaitable[None]] = []
    count = 0
    for topic, payload in messages:
        pending.append(client.publish(topic, payload, qos=qos))
        if len(pending) >= WINDOW:
            await asyncio.gather(*pending)
            count, pending = count + len(pending), []
    await asyncio.gather(*pending)
    return count + len(pending)


@dataclass
class BrokerQueue:
    """The most messages Mosquitto held at once ($SYS/broker/store/messages/count: queued for persistent
    sessions plus in flight), sampled every `sys_interval` second."""

    peak: int = 0
    samples: list[int] = field(default_factory=list)


@contextlib.asynccontextmanager
async def watch_broker_queue(host: str, port: int) -> AsyncIterator[BrokerQueue]:
    seen = BrokerQueue()
    async with aiomqtt.Client(host, port, identifier=f"sys-watch-{time.time_ns()}") as client:
        await client.subscribe("$SYS/broker/store/messages/count")

        async def follow() -> None:
            async for message in client.messages:
                count = int(bytes(message.payload)) if isinstance(message.payload, bytes | bytearray) else 0
                seen.samples.append(count)
                seen.peak = max(seen.peak, count)

        task = asyncio.create_task(follow())
        try:
            yield seen
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


T0_MS = 1769680800000  # device time of message 0; message i is i ms later


def numbered(prefix: str, i: int) -> tuple[str, bytes]:
    """The i-th load message: eight lines under `prefix`, the sequence number doubling as the value."""
    return f"{prefix}/line_{i % 8}/data", json.dumps({"seq": i, "ts": T0_MS + i}).encode()


def publisher_client(host: str, port: int, tls_context: ssl.SSLContext | None = None) -> aiomqtt.Client:
    client = aiomqtt.Client(host, port, identifier=f"pub-{os.getpid()}-{time.time_ns()}", max_inflight_messages=1000,
                            tls_context=tls_context)  # fmt: skip
    client.pending_calls_threshold = 2 * WINDOW  # a full window pending is the plan, not a warning
    return client


def varint(size: int) -> bytes:
    """LEB128, 7 bits a byte with the high bit set while more follow: MQTT's remaining length, protobuf's varint."""
    out = bytearray()
    while True:
        size, digit = size >> 7, size & 0x7F
        out.append(digit | (0x80 if size else 0))
        if not size:
            return bytes(out)


class BulkPublisher:
    """QoS 1 PUBLISH packets encoded ahead and written in bulk on one MQTT 3.1.1 connection.

    A Python MQTT client spends about as much CPU per message as the pipeline under test, so on the same two
    cores it could never offer twice what the pipeline sustains (measured: one aiomqtt publisher alone tops out
    near 10,000 messages/s; two publisher processes beside the pipeline offered 8,000/s). This speaks the same
    protocol to the same broker for a fraction of the CPU. publish() returns once the broker has PUBACKed every
    message: from then on they are the broker's to keep."""

    CHUNK = 10_000  # packets written before their PUBACKs are read; ids are reused chunk after chunk

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def __aenter__(self) -> BulkPublisher:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        client_id = f"bulk-{os.getpid()}-{time.time_ns()}".encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id  # clean, 60 s
        self.writer.write(b"\x10" + varint(len(body)) + body)
        connack = await self.reader.readexactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"the broker refused the connection: CONNACK {connack.hex()}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.writer.write(b"\xe0\x00")  # DISCONNECT
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def publish(self, messages: Iterable[tuple[str, bytes]]) -> int:
        count, packets = 0, list[bytes]()
        for topic, payload in messages:
            name = topic.encode()
            body = len(name).to_bytes(2, "big") + name + (len(packets) + 1).to_bytes(2, "big") + payload
            packets.append(b"\x32" + varint(len(body)) + body)
            if len(packets) == self.CHUNK:
                count += await self._send(packets)
                packets = []
        return count + (await self._send(packets) if packets else 0)

    async def _send(self, packets: list[bytes]) -> int:
        self.writer.write(b"".join(packets))
        acks = await self.reader.readexactly(4 * len(packets))
        acked = {int.from_bytes(acks[i + 2 : i + 4], "big") for i in range(0, len(acks), 4) if acks[i] == 0x40}
        if acked != set(range(1, len(packets) + 1)):
            raise ConnectionError(f"{len(packets) - len(acked)} of {len(packets)} publishes were not acknowledged")
        return len(packets)


@dataclass
class Round:
    offered: int
    drained: int
    seconds: float


@dataclass
class Offer:
    """What `offer_overload` published and what the pipeline drained meanwhile, per round."""

    rounds: list[Round] = field(default_factory=list)

    @property
    def published(self) -> int:
        return sum(r.offered for r in self.rounds)

    def steady(self) -> list[Round]:
        """The rounds after the ramp: the second half."""
        return self.rounds[len(self.rounds) // 2 :]

    def rate(self, what: Literal["offered", "drained"]) -> float:
        rounds = self.steady()
        count = sum(r.offered if what == "offered" else r.drained for r in rounds)
        return count / sum(r.seconds for r in rounds)

    @property
    def ratio(self) -> float:
        """Offered rate over drained rate in the steady rounds: the overload factor actually achieved."""
        return self.rate("offered") / max(self.rate("drained"), 1e-9)


async def offer_overload(
    publisher: BulkPublisher, prefix: str, drained: Callable[[], Awaitable[int]], rounds: int,
    factor: float = 2.5, start: int = 1000, first: int = 0,
) -> Offer:  # fmt: skip
    """Publish in one-second rounds, each offering `factor` times the best rate the pipeline has drained so
    far: the offer ramps from `start` messages (doubling while the pipeline keeps up), then holds at `factor`
    times its sustained rate, whatever this machine's speed. The default 2.5 keeps the offer above twice what
    is drained while the pipeline's own rate still climbs as it warms up. Messages are `numbered(prefix, i)`
    from i = `first` on; `drained()` counts what has arrived so far."""
    loop = asyncio.get_running_loop()
    offer = Offer()
    target, sent, best = start, first, 0.0
    before = await drained()
    for _ in range(rounds):
        began = loop.time()
        sent += await publisher.publish(numbered(prefix, i) for i in range(sent, sent + target))
        await asyncio.sleep(max(0.0, began + 1.0 - loop.time()))
        now = await drained()
        seconds = loop.time() - began
        offer.rounds.append(Round(target, now - before, seconds))
        best = max(best, (now - before) / seconds)
        target, before = max(start, int(factor * best)), now
    return offer
