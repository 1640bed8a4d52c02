"""One MQTT 5 (or 3.1.1) connection for a source node, in the event loop: messages are parsed off the socket in bursts,
and PUBACKs are sent only when the node says so, so a message is acknowledged after Kafka has it.

Why not paho-mqtt: its network thread reads every packet with three recv() calls, builds a threading.Condition per
message and wakes through a socket pair per PUBACK; at 20,000 messages/s that was half a core of a source worker, a
quarter of this 2-core machine (issue #15). A subscriber's side of the protocol is small: CONNECT, SUBSCRIBE,
PUBLISH in and out at QoS 0/1, PUBACK, PINGREQ, DISCONNECT (OASIS MQTT 5.0 and 3.1.1). QoS 2 is never subscribed
to (the hand-over happens at PUBREC, before Kafka has the message)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from streamforge.engine.sdk import PeerUnavailable

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 1, 2, 3, 4, 8, 9, 12, 13, 14
PINGREQ_PACKET = bytes((PINGREQ << 4, 0))
DISCONNECT_PACKET = bytes((DISCONNECT << 4, 0))  # MQTT 5: reason 0, normal disconnection (the will is discarded)
SESSION_NEVER_EXPIRES = 0xFFFFFFFF  # MQTT 5 session expiry: kept like a 3.1.1 session with clean_session=False
WAITING_MAX = 100_000  # arrivals held before the socket stops being read (QoS 0 has no window: TCP pushes back)
_PUBACK = struct.Struct(">BBH")

MqttVersion = Literal["5", "3.1.1"]

# Reason codes an operator may meet (MQTT 5 §2.4; 3.1.1 CONNACK return codes 1-5 are mapped to their MQTT 5 names).
REASONS = {
    0x00: "normal disconnection",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over (another client connected with the same client_id)",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA2: "wildcard subscriptions not supported",
}
V311_REFUSALS = {1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}
# MQTT 5 property identifiers by the width of their value, to skip over the ones not read (§2.2.2.2).
_BYTE_PROPERTIES = frozenset({0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A})
_SHORT_PROPERTIES = frozenset({0x13, 0x21, 0x22, 0x23})
_INT_PROPERTIES = frozenset({0x02, 0x11, 0x18, 0x27})
_TEXT_PROPERTIES = frozenset({0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F})  # strings and binary data
REASON_STRING, SERVER_KEEP_ALIVE, USER_PROPERTY, SUBSCRIPTION_ID = 0x1F, 0x13, 0x26, 0x0B


class MalformedPacket(ValueError):
    """The broker sent bytes that are not an MQTT packet of the version spoken."""


@dataclass(frozen=True)
class Will:
    """What the broker publishes for this client if it vanishes without disconnecting."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Endpoint:
    """Where and who: the broker, this client's identity (a persistent session) and its credentials; with MQTT 5,
    how many unacknowledged QoS 1 messages the broker may send (MQTT 3.1.1 leaves that to the broker's settings)."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    timeout_s: float = 3.0
    keepalive_s: int = 60
    version: MqttVersion = "5"
    receive_maximum: int = 10_000


class Arrival(NamedTuple):
    """One PUBLISH received; a QoS 1 one stays unacknowledged until MqttSession.acknowledge()."""

    topic: str
    payload: bytes
    qos: int
    mid: int


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes | bytearray, at: int) -> tuple[int, int]:
    """(value, offset after it); (-1, -1) when the bytes end first; MalformedPacket past four bytes."""
    value, shift = 0, 0
    for index in range(at, min(at + 4, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    if len(data) - at >= 4:
        raise MalformedPacket("a variable byte integer longer than 4 bytes")
    return -1, -1


def _text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def _properties(data: bytes, at: int) -> tuple[dict[int, Any], int]:
    """An MQTT 5 property block at `at`: {identifier: value} (numbers and text; user properties and subscription
    identifiers skipped) and the offset after it."""
    length, at = _read_varint(data, at)
    end = at + length
    if length < 0 or end > len(data):
        raise MalformedPacket("a property block longer than its packet")
    found: dict[int, Any] = {}
    while at < end:
        key = data[at]
        at += 1
        if key in _BYTE_PROPERTIES:
            found[key], at = data[at], at + 1
        elif key in _SHORT_PROPERTIES:
            found[key], at = int.from_bytes(data[at : at + 2], "big"), at + 2
        elif key in _INT_PROPERTIES:
            found[key], at = int.from_bytes(data[at : at + 4], "big"), at + 4
        elif key in _TEXT_PROPERTIES:
            size = int.from_bytes(data[at : at + 2], "big")
            found[key], at = data[at + 2 : at + 2 + size].decode("utf-8", "replace"), at + 2 + size
        elif key == USER_PROPERTY:
            for _ in range(2):
                at += 2 + int.from_bytes(data[at : at + 2], "big")
        elif key == SUBSCRIPTION_ID:
            at = _read_varint(data, at)[1]
        else:
            raise MalformedPacket(f"unknown property identifier {key:#04x}")
    if at != end:
        raise MalformedPacket("a property runs past its block")
    return found, end


def describe(code: int, properties: dict[int, Any] | None = None) -> str:
    """A reason code in words, with the broker's own reason string when it sent one."""
    said = (properties or {}).get(REASON_STRING)
    return f"{REASONS.get(code, 'reason code')} ({code:#04x})" + (f": {said}" if said else "")


class MqttSession(asyncio.Protocol):
    """Connected by open(), gone for good once the broker or the network drops it (take() then raises
    PeerUnavailable): a node opens a new session to reconnect. A persistent session (3.1.1 clean_session=False; MQTT 5
    clean start off, never expiring), so what was not acknowledged is redelivered to the next one. Messages wait in
    memory only as long as the in-flight window allows (MQTT 5: `receive_maximum`), since none is acknowledged before
    the node acknowledges it."""

    def __init__(self, endpoint: Endpoint, will: Will | None = None) -> None:
        self.endpoint = endpoint
        self.will = will
        self._v5 = endpoint.version == "5"
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[Any]] = {}  # our SUBSCRIBE / PUBLISH packet id -> its acknowledgement
        self._next_mid = 0
        self._arrivals: deque[Arrival] = deque()
        self._arrived = asyncio.Event()  # something to take, or the session is gone
        self._filled = asyncio.Event()  # a lingering take() has its batch, or the window is full
        self._fill_to = 0  # how many arrivals the lingering take() waits for (0: none lingers)
        self._unacknowledged = 0  # QoS 1 messages received and not yet acknowledged: the in-flight window's use
        self._paused = False
        self._keepalive_s = endpoint.keepalive_s
        self._heard = self._spoke = self._loop.time()
        self._keeping_alive: asyncio.Task[None] | None = None
        self.gone: str | None = None  # why the session ended
        self.session_present = False  # the CONNACK said the broker kept this client's session (and its subscriptions)

    @property
    def peer(self) -> str:
        return f"MQTT broker {self.endpoint.host}:{self.endpoint.port}"

    async def open(self, subscriptions: list[tuple[str, int]]) -> None:
        """Connect, wait for CONNACK, subscribe and wait for the SUBACK (a kept session's is checked when it comes);
        PeerUnavailable says what failed."""
        endpoint = self.endpoint
        tls, host = endpoint.tls, endpoint.host
        try:
            await asyncio.wait_for(self._loop.create_connection(lambda: self, host, endpoint.port, ssl=tls,
                                                                server_hostname=host if tls else None),
                                   endpoint.timeout_s)  # fmt: skip
        except TimeoutError:
            raise PeerUnavailable(f"{self.peer} did not accept a connection within {endpoint.timeout_s} s") from None
        except OSError as exc:  # refused, unreachable, TLS (ssl.SSLError is an OSError)
            raise PeerUnavailable(f"cannot reach {self.peer}: {exc}") from exc
        self._write(self._connect_packet())
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), endpoint.timeout_s)
        except TimeoutError:
            raise PeerUnavailable(f"{self.peer} did not answer CONNECT within {endpoint.timeout_s} s") from None
        if self._keepalive_s:
            self._keeping_alive = asyncio.ensure_future(self._keep_alive())
        if not subscriptions:
            return
        mid = self._new_mid()
        filters = b"".join(_text(topic) + bytes((qos,)) for topic, qos in subscriptions)
        self._write(_packet(SUBSCRIBE << 4 | 2, mid.to_bytes(2, "big") + (b"\x00" if self._v5 else b"") + filters))
        if self.session_present:
            # The broker kept this session and its subscriptions, and sends what queued for it from the CONNACK on:
            # the SUBACK can come behind a backlog of hundreds of thousands of messages, read only as they are taken
            # (reading pauses at WAITING_MAX). Waited for here, none was taken, the wait ran out, the session was
            # opened again and flooded again: a backlog never drained. Its answer is checked when it comes instead.
            answer = self._pending[mid] = self._loop.create_future()
            answer.add_done_callback(lambda done: self._subscribed(mid, subscriptions, done))
            return
        refusal = self._refusal(subscriptions, await self._acknowledged(mid, "SUBACK"))
        if refusal is not None:
            raise PeerUnavailable(refusal)

    def _refusal(self, subscriptions: list[tuple[str, int]], codes: list[int]) -> str | None:
        for (topic, _), code in zip(subscriptions, codes, strict=False):
            if code >= 0x80:
                return f"{self.peer} refused the subscription to {topic!r}: {describe(code)}"
        return None

    def _subscribed(self, mid: int, subscriptions: list[tuple[str, int]], answer: asyncio.Future[Any]) -> None:
        """A SUBACK that came after open() returned: a refusal ends the session with the reason (take() raises it)."""
        self._pending.pop(mid, None)
        if answer.cancelled() or answer.exception() is not None:
            return  # the session ended before the answer came, and says why
        refusal = self._refusal(subscriptions, answer.result())
        if refusal is not None:
            self._drop(refusal)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish; at QoS 1, return once the broker acknowledged it."""
        if qos not in (0, 1):
            raise ValueError(f"publishes at QoS {qos} are not supported: use 0 or 1")
        mid = self._new_mid() if qos else 0
        body = _text(topic) + (mid.to_bytes(2, "big") if qos else b"") + (b"\x00" if self._v5 else b"")
        self._write(_packet(PUBLISH << 4 | qos << 1 | retain, body + payload))
        if qos:
            await self._acknowledged(mid, f"PUBACK for {topic!r}")

    def acknowledge(self, messages: list[Arrival]) -> None:
        """PUBACK each QoS 1 message, all in one write: the broker may forget them now."""
        pack = _PUBACK.pack
        acks = [pack(PUBACK << 4, 2, message.mid) for message in messages if message.qos]
        if acks and self.gone is None:
            self._write(b"".join(acks))
            self._unacknowledged -= len(acks)

    async def take(self, max_items: int, wait_s: float, linger_s: float) -> list[Arrival]:
        """Up to max_items; waits up to wait_s for the first, then lingers up to linger_s for the batch to fill, unless
        the broker can send no more before some are acknowledged (the MQTT 5 window is full)."""
        arrivals = self._arrivals
        if not arrivals and self.gone is None:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=wait_s)
        if self.gone is not None:
            raise PeerUnavailable(self.gone)  # what arrived unacknowledged is redelivered to the persistent session
        if arrivals and len(arrivals) < max_items and linger_s and not self._window_full():
            self._fill_to = max_items
            self._filled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._filled.wait(), timeout=linger_s)
            self._fill_to = 0
        taken = [arrivals.popleft() for _ in range(min(max_items, len(arrivals)))]
        if self._paused and len(arrivals) < WAITING_MAX // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return taken

    async def close(self) -> None:
        """Disconnect cleanly (the broker then discards the will) and wait, briefly, for the broker to close the
        connection: once it has, it has read every PUBACK written before (closing first could lose the last ones)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(DISCONNECT_PACKET)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), self.endpoint.timeout_s)
            transport.close()
        self._lost("the session was closed")
        self._arrivals.clear()

    def _window_full(self) -> bool:
        return self._v5 and self._unacknowledged >= self.endpoint.receive_maximum

    def _connect_packet(self) -> bytes:
        endpoint, will, v5 = self.endpoint, self.will, self._v5
        flags, payload = 0, _text(endpoint.client_id)  # clean start / clean session off: a persistent session
        if will is not None:
            flags |= 0x04 | will.qos << 3 | (0x20 if will.retain else 0)
            payload += (b"\x00" if v5 else b"") + _text(will.topic) + _text(will.payload)
        if endpoint.username is not None:
            flags |= 0x80
            payload += _text(endpoint.username)
            if endpoint.password is not None:
                flags |= 0x40
                payload += _text(endpoint.password)
        header = _text("MQTT") + bytes((5 if v5 else 4, flags)) + endpoint.keepalive_s.to_bytes(2, "big")
        if v5:
            properties = (b"\x11" + SESSION_NEVER_EXPIRES.to_bytes(4, "big")
                          + b"\x21" + endpoint.receive_maximum.to_bytes(2, "big"))  # fmt: skip
            header += _varint(len(properties)) + properties
        return _packet(CONNECT << 4, header + payload)

    def _new_mid(self) -> int:
        for _ in range(65_535):
            self._next_mid = self._next_mid % 65_535 + 1
            if self._next_mid not in self._pending:
                return self._next_mid
        raise PeerUnavailable(f"65,535 requests to {self.peer} are unanswered")

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if self.gone is not None or transport is None or transport.is_closing():
            raise PeerUnavailable(self.gone or f"not connected to {self.peer}")
        transport.write(data)
        self._spoke = self._loop.time()

    async def _acknowledged(self, mid: int, what: str) -> Any:
        waiter = self._pending[mid] = self._loop.create_future()
        try:
            return await asyncio.wait_for(waiter, self.endpoint.timeout_s)
        except TimeoutError:
            raise PeerUnavailable(f"no {what} from {self.peer} within {self.endpoint.timeout_s} s") from None
        finally:
            self._pending.pop(mid, None)

    async def _keep_alive(self) -> None:
        """PINGREQ when the line has been quiet for half the keep-alive; gone when the broker says nothing for 1.5x."""
        while self.gone is None:
            interval = self._keepalive_s / 2
            await asyncio.sleep(interval)
            now = self._loop.time()
            if now - self._heard > self._keepalive_s * 1.5:
                self._drop(f"{self.peer} sent nothing for {now - self._heard:.0f} s (keep-alive {self._keepalive_s} s)")
            elif now - self._heard >= interval or now - self._spoke >= interval:
                self._write(PINGREQ_PACKET)

    def _drop(self, why: str) -> None:
        self._lost(why)
        if self._transport is not None:
            self._transport.abort()

    def _lost(self, why: str) -> None:
        self.gone = self.gone or why
        self._arrived.set()
        self._filled.set()
        if not self._connected.done():
            self._connected.set_exception(PeerUnavailable(self.gone))
            self._connected.exception()  # retrieved: nobody may be waiting for it any more
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(PeerUnavailable(self.gone))
        if self._keeping_alive is not None and self._keeping_alive is not asyncio.current_task():
            self._keeping_alive.cancel()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(f"lost the connection to {self.peer}: {exc}" if exc else f"{self.peer} closed the connection")
        if not self._closed.done():
            self._closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        """Every whole packet in the buffer; PUBLISH parsed inline (the hot path), the rest by _control."""
        buffer = self._buffer
        buffer += data
        self._heard = self._loop.time()
        arrivals, v5, size, at = self._arrivals, self._v5, len(buffer), 0
        try:
            while size - at >= 2:
                first, length, start = buffer[at], buffer[at + 1], at + 2
                if length & 0x80:
                    length, start = _read_varint(buffer, at + 1)
                    if start < 0:
                        break
                end = start + length
                if end > size:
                    break
                if first >> 4 == PUBLISH:
                    qos = first >> 1 & 3
                    body = start + 2 + (buffer[start] << 8 | buffer[start + 1])
                    topic = buffer[start + 2 : body].decode("utf-8", "replace")
                    mid = 0
                    if qos:
                        mid, body = buffer[body] << 8 | buffer[body + 1], body + 2
                        self._unacknowledged += 1
                    if v5:  # skip the properties (none, or under 128 bytes, unless the broker adds some)
                        skip = buffer[body]
                        if skip & 0x80:
                            skip, body = _read_varint(buffer, body)
                            body += skip
                        else:
                            body += 1 + skip
                    if qos > 1 or not start < body <= end:
                        raise MalformedPacket(f"a PUBLISH at QoS {qos} of {length} bytes")
                    arrivals.append(Arrival(topic, bytes(buffer[body:end]), qos, mid))
                else:
                    self._control(first, bytes(buffer[start:end]))
                at = end
        except (MalformedPacket, IndexError) as exc:
            self._drop(f"{self.peer} sent a malformed packet ({exc or 'truncated'}); reconnecting")
            return
        del buffer[:at]
        if arrivals:
            self._arrived.set()
            if self._fill_to and (len(arrivals) >= self._fill_to or self._window_full()):
                self._filled.set()
            if len(arrivals) >= WAITING_MAX and not self._paused and self._transport is not None:
                self._paused = True
                self._transport.pause_reading()

    def _control(self, first: int, body: bytes) -> None:
        kind, v5 = first >> 4, self._v5
        if kind == CONNACK:
            code = body[1]
            properties = _properties(body, 2)[0] if v5 and len(body) > 2 else {}
            if code and not self._connected.done():
                if not v5 or len(body) == 2:  # a 3.1.1 CONNACK (a 3.1.1-only broker answers MQTT 5 so)
                    code = V311_REFUSALS.get(code, code)
                advice = ": set protocol_version to 3.1.1 for this broker" if code == 0x84 and v5 else ""
                refusal = f"{self.peer} refused the connection: {describe(code, properties)}{advice}"
                self._connected.set_exception(PeerUnavailable(refusal))
            elif not self._connected.done():
                self._keepalive_s = properties.get(SERVER_KEEP_ALIVE, self._keepalive_s)
                self.session_present = bool(body[0] & 1)  # the broker kept this client's session
                self._connected.set_result(None)
        elif kind in (PUBACK, SUBACK):
            mid = body[0] << 8 | body[1]
            waiter = self._pending.get(mid)
            if kind == SUBACK:
                codes = list(body[_properties(body, 2)[1] if v5 else 2 :])
                result: Any = codes
            else:
                code = body[2] if len(body) > 2 else 0
                refused = code >= 0x80
                result = PeerUnavailable(f"{self.peer} refused a publication: {describe(code)}") if refused else None
            if waiter is not None and not waiter.done():
                if isinstance(result, Exception):
                    waiter.set_exception(result)
                else:
                    waiter.set_result(result)
        elif kind == PINGRESP:
            pass
        elif kind == DISCONNECT and v5:
            code = body[0] if body else 0
            properties = _properties(body, 1)[0] if len(body) > 1 else {}
            self._drop(f"{self.peer} disconnected this client: {describe(code, properties)}")
        else:
            raise MalformedPacket(f"an unexpected packet of type {kind}")
