"""The MQTT session under every MQTT-fed source, against a real Mosquitto: MQTT 5 sizes the broker's in-flight window
itself, unacknowledged messages come back to the next session (both versions), and the parser takes packets split
anywhere and ends the session, with the reason, on bytes that are no MQTT."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamforge.engine.sdk import PeerUnavailable
from streamforge.nodes.protocols import mqtt_session
from streamforge.nodes.protocols.mqtt_session import Arrival, Endpoint, MqttSession, MqttVersion
from streamforge.runtime.kafka.broker import free_port
from tests.conftest import MqttBroker
from tests.load import publish_all, publisher_client
from tests.peers import start_mosquitto

STOCK_INFLIGHT = 20  # Mosquitto's max_inflight_messages when its configuration does not set it


@pytest.fixture
def stock_mosquitto(tmp_path: Path) -> Iterator[MqttBroker]:
    """A Mosquitto that keeps its own default in-flight window, as a site's broker usually does."""
    port = free_port()
    process = start_mosquitto(tmp_path, port, max_inflight=None)
    yield MqttBroker("127.0.0.1", port)
    process.terminate()
    process.wait(10)


async def opened(broker: MqttBroker, client_id: str, topic: str, version: MqttVersion, window: int = 10_000
                 ) -> MqttSession:  # fmt: skip
    session = MqttSession(Endpoint(broker.host, broker.port, client_id, version=version, receive_maximum=window))
    await session.open([(topic, 1)])
    return session


async def publish(broker: MqttBroker, topic: str, count: int) -> None:
    async with publisher_client(broker.host, broker.port) as client:
        await publish_all(client, ((topic, str(n).encode()) for n in range(count)))


async def take_until_quiet(session: MqttSession) -> list[Arrival]:
    """Everything the broker sends without an acknowledgement: take until half a second brings nothing."""
    taken: list[Arrival] = []
    while batch := await session.take(100_000, 0.5, 0):
        taken += batch
    return taken


@pytest.mark.parametrize(("version", "window"), [("5", 300), ("3.1.1", STOCK_INFLIGHT)])
async def test_the_in_flight_window_is_the_clients_with_mqtt_5_and_the_brokers_with_3_1_1(
    stock_mosquitto: MqttBroker, unique: str, version: MqttVersion, window: int
) -> None:
    topic = f"{unique}/window"
    session = await opened(stock_mosquitto, f"{unique}-sub", topic, version, window=300)
    try:
        await publish(stock_mosquitto, topic, 1000)
        first = await take_until_quiet(session)
        assert len(first) == window, f"{len(first)} unacknowledged messages arrived; the window is {window}"
        taken, more = [], first
        while more:  # each acknowledgement opens the window again
            taken += more
            session.acknowledge(more)
            more = await take_until_quiet(session)
        assert [m.payload for m in taken] == [str(n).encode() for n in range(1000)]  # all, in order, once
    finally:
        await session.close()


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_what_was_not_acknowledged_comes_back_to_the_next_session(
    mqtt_broker: MqttBroker, unique: str, version: MqttVersion
) -> None:
    topic, client_id = f"{unique}/again", f"{unique}-sub"
    session = await opened(mqtt_broker, client_id, topic, version)
    await publish(mqtt_broker, topic, 500)
    arrived = await take_until_quiet(session)
    assert len(arrived) == 500
    session.acknowledge(arrived[:200])
    await session.close()
    with pytest.raises(PeerUnavailable, match="closed"):
        await session.take(10, 0, 0)  # a closed session says so, it never waits
    again = await opened(mqtt_broker, client_id, topic, version)
    try:
        redelivered = await take_until_quiet(again)
        assert sorted(int(m.payload) for m in redelivered) == list(range(200, 500))
        again.acknowledge(redelivered)
    finally:
        await again.close()


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_a_kept_session_opens_behind_a_backlog_larger_than_it_holds_unread(
    mqtt_broker: MqttBroker, unique: str, version: MqttVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker sends a kept session's backlog before its SUBACK, and a session stops reading at WAITING_MAX
    arrivals not taken: open() waiting for that SUBACK ran out of time, again on every reconnect, so a backlog
    larger than WAITING_MAX (a source down for a while under load) never drained."""
    monkeypatch.setattr(mqtt_session, "WAITING_MAX", 50)
    topic, client_id = f"{unique}/backlog", f"{unique}-sub"
    await (await opened(mqtt_broker, client_id, topic, version)).close()  # the session and its subscription stay
    await publish(mqtt_broker, topic, 2000)  # queued for the absent client
    again = await opened(mqtt_broker, client_id, topic, version)
    try:
        assert again.session_present
        taken: list[Arrival] = []
        while len(taken) < 2000:
            batch = await again.take(500, 5, 0)
            assert batch, f"{len(taken)} of 2000 taken, then nothing"
            again.acknowledge(batch)
            taken += batch
        assert sorted(int(m.payload) for m in taken) == list(range(2000))
    finally:
        await again.close()


@pytest.fixture
def mosquitto_with_users(tmp_path: Path) -> Iterator[MqttBroker]:
    """A Mosquitto that lets in one user, `plant` with password `s3cret`, and nobody else."""
    users = tmp_path / "users"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(users), "plant", "s3cret"], check=True)
    port = free_port()
    process = start_mosquitto(tmp_path, port, users=users)
    yield MqttBroker("127.0.0.1", port)
    process.terminate()
    process.wait(10)


@pytest.mark.parametrize("version", ["5", "3.1.1"])
async def test_credentials_are_sent_and_a_refusal_says_why(
    mosquitto_with_users: MqttBroker, version: MqttVersion
) -> None:
    port = mosquitto_with_users.port
    welcome = MqttSession(Endpoint("127.0.0.1", port, "in", "plant", "s3cret", version=version))
    await welcome.open([("a/#", 1)])
    await welcome.close()
    stranger = MqttSession(Endpoint("127.0.0.1", port, "out", "plant", "guess", version=version))
    refused = f"MQTT broker 127.0.0.1:{port} refused the connection: (bad user name or password|not authorized)"
    with pytest.raises(PeerUnavailable, match=refused):
        await stranger.open([("a/#", 1)])
    await stranger.close()


async def test_a_packet_split_anywhere_is_read_whole_and_junk_ends_the_session_with_the_reason() -> None:
    session = MqttSession(Endpoint("127.0.0.1", 1, "parser"))
    payload = b"x" * 200
    body = b"\x00\x03a/b" + b"\x12\x34" + b"\x00" + payload  # topic, packet id, no properties (MQTT 5), payload
    assert len(body) == 0x50 + 128
    publish = bytes([0x32, 0xD0, 0x01]) + body  # QoS 1; a remaining length of two bytes
    for byte in publish + publish:
        session.data_received(bytes([byte]))
    assert list(session._arrivals) == [Arrival("a/b", payload, 1, 0x1234)] * 2
    assert session.gone is None
    session.data_received(bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]))  # a length of five bytes
    assert session.gone is not None and "malformed packet" in session.gone
    with pytest.raises(PeerUnavailable, match="malformed packet"):
        await session.take(10, 0, 0)
    told = MqttSession(Endpoint("127.0.0.1", 1, "told"))
    told.data_received(bytes([0xE0, 0x09, 0x8E, 0x07, 0x1F, 0x00, 0x04]) + b"twin")  # DISCONNECT, a reason string
    assert told.gone == "MQTT broker 127.0.0.1:1 disconnected this client: session taken over (another client " + (
        "connected with the same client_id) (0x8e): twin"
    )


async def test_a_broker_that_is_not_there_is_named() -> None:
    port = free_port()
    session = MqttSession(Endpoint("127.0.0.1", port, "nobody", timeout_s=2))
    with pytest.raises(PeerUnavailable, match=f"cannot reach MQTT broker 127.0.0.1:{port}"):
        await session.open([("a", 1)])


async def test_an_idle_session_is_kept_alive_by_pings(mqtt_broker: MqttBroker, unique: str) -> None:
    """Mosquitto drops a client that says nothing for 1.5x its keep-alive: a quiet session pings."""
    endpoint = Endpoint(mqtt_broker.host, mqtt_broker.port, f"{unique}-idle", keepalive_s=1)
    session = MqttSession(endpoint)
    await session.open([(f"{unique}/idle", 1)])
    try:
        await asyncio.sleep(4)  # nothing to read or write for four keep-alive periods
        assert session.gone is None
        await publish(mqtt_broker, f"{unique}/idle", 1)
        assert [m.payload for m in await take_until_quiet(session)] == [b"0"]
    finally:
        await session.close()


async def test_a_session_taken_over_by_another_client_says_so(mqtt_broker: MqttBroker, unique: str) -> None:
    first = await opened(mqtt_broker, f"{unique}-twin", f"{unique}/twin", "5")
    second = await opened(mqtt_broker, f"{unique}-twin", f"{unique}/twin", "5")
    try:
        with pytest.raises(PeerUnavailable, match=f"{first.peer} closed the connection"):  # not left waiting
            await first.take(10, 5, 0)
    finally:
        await first.close()
        await second.close()
