"""`modbus_tcp` and `modbus_rtu` against pymodbus servers as device peers (TCP, and RTU over a socat pty pair):
typed decoding, block planning, exception responses, timeouts, truncated frames, a device restart."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymodbus.server import ModbusSerialServer

from streamforge.engine.testing import NodeHarness
from streamforge.nodes.modbus_rtu import ModbusRtu
from streamforge.nodes.modbus_tcp import ModbusTcp
from streamforge.nodes.protocols.modbus import RegisterPoint, plan_blocks
from streamforge.runtime.kafka.broker import free_port
from tests.devices import FLOAT_WORDS, POINTS, device, tcp_server


def tcp_config(port: int, points: list[dict[str, Any]], timeout_s: float = 3.0) -> dict[str, Any]:
    """Fast polls and reconnects, so faults show within a test's patience."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "poll_interval_s": 0.05,
        "points": points,
        "connection": {"timeout_s": timeout_s, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2},
    }


def values(emitted: dict[str, list[dict[str, Any]]]) -> dict[str, tuple[float | None, str]]:
    return {r["parameter"]: (r["value"], r["quality"]) for r in emitted.get("out", [])}


async def poll_until(h: NodeHarness[Any], wanted: Any, polls: int = 40) -> dict[str, tuple[float | None, str]]:
    """Poll as the runtime does (reconnecting with backoff) until the readings satisfy `wanted`."""
    for _ in range(polls):
        read = values(await h.poll())
        if read and wanted(read):
            return read
    raise AssertionError(f"not seen in {polls} polls; last health {h.health[-3:]}")


def test_adjacent_points_are_read_as_one_block() -> None:
    points = [RegisterPoint.model_validate(p) for p in POINTS]
    blocks = plan_blocks(points, default_unit=1, max_block=120, max_gap=8)
    assert [(b.table, b.start, b.count) for b in blocks] == [("coil", 2, 1), ("holding", 0, 8), ("input", 1, 1)]
    assert len(plan_blocks(points, 1, max_block=4, max_gap=8)) == 4  # holding split in two


@pytest.mark.parametrize(
    ("words", "data_type", "word_order", "byte_order", "expected"),
    [
        (FLOAT_WORDS, "float32", "big", "big", 21.5),
        (FLOAT_WORDS[::-1], "float32", "little", "big", 21.5),
        ([int.from_bytes(w.to_bytes(2, "big")[::-1], "big") for w in FLOAT_WORDS], "float32", "big", "little", 21.5),
        ([0xFFFF, 0xFFFE], "int32", "big", "big", -2),
        ([0xFFFE, 0xFFFF], "uint32", "little", "big", 0xFFFFFFFE),
        ([0x8000], "int16", "big", "big", -32768),
    ],
)
def test_word_and_byte_order(
    words: list[int], data_type: str, word_order: str, byte_order: str, expected: float
) -> None:
    point = RegisterPoint.model_validate(
        {
            "asset_id": "a",
            "parameter": "p",
            "address": 0,
            "data_type": data_type,
            "word_order": word_order,
            "byte_order": byte_order,
        }
    )
    assert point.decode(words) == expected


async def test_tcp_reads_typed_scaled_values_and_survives_faults_and_a_restart() -> None:
    port = free_port()
    async with NodeHarness(ModbusTcp, tcp_config(port, POINTS, timeout_s=0.5), "plc") as h:
        async with tcp_server(port):
            read = values(await h.poll())
            assert h.health[-1] is None
        # The PLC restarts: polls go on, readings are BAD and the node DEGRADED, until it answers again.
        down = await poll_until(h, lambda read: True)
        assert {quality for _value, quality in down.values()} == {"BAD"} and h.health[-1] is not None
        async with tcp_server(port):
            back = await poll_until(h, lambda read: read["temp"] == (21.5, "GOOD"))
            assert h.health[-1] is None
    assert read == {
        "count": (1234.0, "GOOD"),
        "temp": (21.5, "GOOD"),
        "delta": (-2.0, "GOOD"),
        "speed": (4.5, "GOOD"),
        "flow": (20.0, "GOOD"),
        "running": (1.0, "GOOD"),
    }
    assert back["count"] == (1234.0, "GOOD")


async def test_an_exception_response_is_bad_and_the_other_units_still_read() -> None:
    port = free_port()
    points = [POINTS[0], {**POINTS[3], "unit_id": 7}]  # unit 7 is not on this line: exception response
    async with tcp_server(port), NodeHarness(ModbusTcp, tcp_config(port, points), "plc") as h:
        for _ in range(3):  # keeps polling
            read = values(await h.poll())
            assert read == {"count": (1234.0, "GOOD"), "speed": (None, "BAD")}
        assert "unit 7" in (h.health[-1] or "")


@contextlib.asynccontextmanager
async def misbehaving_server(port: int, answer: bytes | None) -> AsyncIterator[None]:
    """A TCP peer that answers every request with `answer` (a truncated frame), or never (None)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(260):
                if answer is not None:
                    writer.write(answer)
                    await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


@pytest.mark.parametrize("answer", [None, b"\x00\x01\x00\x00\x00\x07\x01\x03"])  # timeout; truncated frame
async def test_a_timeout_or_a_truncated_frame_is_bad_and_polling_goes_on(answer: bytes | None) -> None:
    port = free_port()
    config = tcp_config(port, POINTS[:1], timeout_s=0.3)
    async with misbehaving_server(port, answer), NodeHarness(ModbusTcp, config, "plc") as h:
        for _ in range(3):
            assert values(await h.poll()) == {"count": (None, "BAD")}
        assert h.health and h.health[-1] is not None


async def test_rtu_over_a_serial_line(pty_pair: tuple[str, str]) -> None:
    device_end, gateway_end = pty_pair
    server = ModbusSerialServer([device()], port=device_end, baudrate=19200)
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.3)
    config = {
        "serial_port": gateway_end,
        "baudrate": 19200,
        "poll_interval_s": 0.05,
        "points": POINTS,
        "connection": {"timeout_s": 1},
    }
    try:
        async with NodeHarness(ModbusRtu, config, "plc") as h:
            read = values(await h.poll())
            assert (
                read["temp"] == (21.5, "GOOD") and read["delta"] == (-2.0, "GOOD") and read["running"] == (1.0, "GOOD")
            )
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
