"""One MQTT connection for a source node: paho-mqtt's network thread, its messages handed to asyncio in bursts, and
PUBACKs sent only when the node says so (paho's manual_ack), so a message is acknowledged after Kafka has it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from streamforge.engine.sdk import PeerUnavailable


@dataclass(frozen=True)
class Will:
    """What the broker publishes for this client if it vanishes without disconnecting."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class Endpoint:
    """Where and who: the broker, this client's identity (a persistent session) and its credentials."""

    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: ssl.SSLContext | None = None
    timeout_s: float = 3.0
    keepalive_s: int = 60


class MqttSession:
    """Connected by open(), gone for good once the broker or the network drops it (take() then raises
    PeerUnavailable): a node opens a new session to reconnect. Messages wait in memory only as long as the broker's
    in-flight window allows, since none is acknowledged before the node acknowledges it."""

    def __init__(self, endpoint: Endpoint, will: Will | None = None) -> None:
        self.endpoint = endpoint
        self._loop = asyncio.get_running_loop()
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=endpoint.client_id, clean_session=False,
                             reconnect_on_failure=False, manual_ack=True)  # fmt: skip
        client.connect_timeout = endpoint.timeout_s
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.tls is not None:
            client.tls_set_context(endpoint.tls)
        if will is not None:
            client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        self._client = client
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[Any]] = {}  # subscribe / publish mid -> its acknowledgement
        self._arrivals: deque[paho.MQTTMessage] = deque()  # appended by paho's thread, taken by take()
        self._arrived = asyncio.Event()
        self._wake_scheduled = False
        self.gone: str | None = None  # why the session ended

    @property
    def peer(self) -> str:
        return f"MQTT broker {self.endpoint.host}:{self.endpoint.port}"

    async def open(self, subscriptions: list[tuple[str, int]]) -> None:
        """Connect, wait for CONNACK, subscribe and wait for every SUBACK; PeerUnavailable says what failed."""
        endpoint = self.endpoint
        try:
            await asyncio.to_thread(self._client.connect, endpoint.host, endpoint.port, endpoint.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            raise PeerUnavailable(f"cannot reach {self.peer}: {exc}") from exc
        self._client.loop_start()
        try:
            await asyncio.wait_for(self._connected, endpoint.timeout_s)
        except TimeoutError:
            raise PeerUnavailable(f"{self.peer} did not answer CONNECT within {endpoint.timeout_s} s") from None
        for topic, qos in subscriptions:
            result, mid = self._client.subscribe(topic, qos)
            self._check(result, f"subscribe to {topic!r}")
            assert mid is not None  # paho gives a message id whenever the request was sent
            codes: list[ReasonCode] = await self._acknowledged(mid, f"SUBACK for {topic!r}")
            if any(code.is_failure for code in codes):
                raise PeerUnavailable(f"{self.peer} refused the subscription to {topic!r}: {codes[0]}")

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish; at QoS 1, return once the broker acknowledged it."""
        info = self._client.publish(topic, payload, qos, retain)
        self._check(info.rc, f"publish to {topic!r}")
        if qos:
            await self._acknowledged(info.mid, f"PUBACK for {topic!r}")

    def acknowledge(self, messages: list[paho.MQTTMessage]) -> None:
        """PUBACK each QoS 1 message: the broker may forget it now."""
        for message in messages:
            if message.qos:
                self._client.ack(message.mid, message.qos)

    async def take(self, max_items: int, wait_s: float, linger_s: float) -> list[paho.MQTTMessage]:
        """Up to max_items; waits up to wait_s for the first, then lingers so a batch can fill."""
        if not self._arrivals and self.gone is None:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=wait_s)
        if self.gone is not None:
            raise PeerUnavailable(self.gone)  # what arrived unacknowledged is redelivered to the persistent session
        if self._arrivals and len(self._arrivals) < max_items and linger_s:
            await asyncio.sleep(linger_s)
        arrivals = self._arrivals
        return [arrivals.popleft() for _ in range(min(max_items, len(arrivals)))]

    async def close(self) -> None:
        """Disconnect cleanly (the broker then discards the will) and stop paho's thread."""
        with contextlib.suppress(Exception):
            self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self._arrivals.clear()
        for waiter in self._pending.values():
            waiter.cancel()

    def _check(self, result: int, what: str) -> None:
        if result != paho.MQTT_ERR_SUCCESS:
            raise PeerUnavailable(f"{what} on {self.peer} failed: {paho.error_string(result)}")

    async def _acknowledged(self, mid: int, what: str) -> Any:
        # Registered before the next await: paho's callback reaches this loop only once this coroutine yields.
        waiter = self._pending[mid] = self._loop.create_future()
        try:
            return await asyncio.wait_for(waiter, self.endpoint.timeout_s)
        except TimeoutError:
            raise PeerUnavailable(f"no {what} from {self.peer} within {self.endpoint.timeout_s} s") from None
        finally:
            self._pending.pop(mid, None)

    # paho's network thread calls these; each hands over to the event loop.
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, code: ReasonCode, properties: Any) -> None:
        self._loop.call_soon_threadsafe(self._connack, code)

    def _connack(self, code: ReasonCode) -> None:
        if self._connected.done():
            return
        if code.is_failure:
            self._connected.set_exception(PeerUnavailable(f"{self.peer} refused the connection: {code}"))
        else:
            self._connected.set_result(None)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, code: ReasonCode, properties: Any) -> None:
        self._loop.call_soon_threadsafe(self._lost, f"lost the connection to {self.peer}: {code}")

    def _lost(self, why: str) -> None:
        self.gone = self.gone or why
        self._arrived.set()
        if not self._connected.done():
            self._connected.set_exception(PeerUnavailable(why))
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(PeerUnavailable(why))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._arrivals.append(message)
        if not self._wake_scheduled:  # one hand-over per burst, not one per message
            self._wake_scheduled = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_scheduled = False
        self._arrived.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode],
                      properties: Any) -> None:  # fmt: skip
        self._loop.call_soon_threadsafe(self._answer, mid, codes)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, code: ReasonCode, properties: Any) -> None:
        self._loop.call_soon_threadsafe(self._answer, mid, code)

    def _answer(self, mid: int, result: Any) -> None:
        waiter = self._pending.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)
