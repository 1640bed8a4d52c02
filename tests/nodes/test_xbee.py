"""`xbee` source against a simulated XBee coordinator speaking API frames over a pty pair: it answers the
library's AT commands, then forwards remote I/O samples (frame 0x92) and data frames (0x90) that must come out
as readings, or in the DLQ with the reason."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator

import pytest
import serial

from streamforge.engine.testing import NodeHarness
from streamforge.nodes.xbee import XBee, XBeeConfig

REMOTE = bytes.fromhex("0013A20041B2C3D4")
AT_VALUES = {
    b"AP": b"\x01",
    b"HV": b"\x42\x00",
    b"VR": b"\x10\x0b",
    b"SH": b"\x00\x13\xa2\x00",
    b"SL": b"\x40\xa1\xb2\xc3",
    b"NI": b"COORD",
    b"MY": b"\x00\x00",
}


def frame(data: bytes) -> bytes:
    return b"\x7e" + struct.pack(">H", len(data)) + data + bytes([0xFF - (sum(data) & 0xFF)])


def io_sample(ad0: int, ad1: int, dio4_high: bool) -> bytes:
    """A 0x92 IO Data Sample Rx Indicator: DIO4 digital, AD0 and AD1 analog, from REMOTE."""
    digital_mask, analog_mask = 0x0010, 0x03
    return frame(
        b"\x92"
        + REMOTE
        + b"\xff\xfe"
        + b"\x01"
        + b"\x01"
        + struct.pack(">HB", digital_mask, analog_mask)
        + struct.pack(">H", 0x0010 if dio4_high else 0)
        + struct.pack(">HH", ad0, ad1)
    )


def data_frame(source: bytes, data: bytes) -> bytes:
    """A 0x90 Receive Packet: `data` sent by the radio at 64-bit address `source`."""
    return frame(b"\x90" + source + b"\xff\xfe" + b"\x01" + data)


class Coordinator(threading.Thread):
    """The radio at the far end of the serial cable: answers AT commands, sends queued frames."""

    def __init__(self, port: str) -> None:
        super().__init__(daemon=True)
        self.link = serial.Serial(port, 9600, timeout=0.05)
        self.outgoing: list[bytes] = []
        self.stopped = threading.Event()
        self.commands: list[bytes] = []

    def run(self) -> None:
        buffer = b""
        while not self.stopped.is_set():
            chunk = self.link.read(256)
            buffer += chunk
            while len(buffer) >= 4 and buffer[0] == 0x7E:
                length = struct.unpack(">H", buffer[1:3])[0]
                if len(buffer) < length + 4:
                    break
                data, buffer = buffer[3 : 3 + length], buffer[4 + length :]
                if data[0] in (0x08, 0x09):  # AT command (or queued): reply OK with a plausible value
                    command = data[2:4]
                    self.commands.append(command)
                    self.link.write(frame(b"\x88" + data[1:2] + command + b"\x00" + AT_VALUES.get(command, b"\x00")))
            if buffer and buffer[0] != 0x7E:
                buffer = buffer[1:]
            while self.outgoing:
                self.link.write(self.outgoing.pop(0))

    def close(self) -> None:
        self.stopped.set()
        self.join(2)
        self.link.close()


@pytest.fixture
def coordinator(pty_pair: tuple[str, str]) -> Iterator[tuple[Coordinator, str]]:
    device_end, gateway_end = pty_pair
    peer = Coordinator(device_end)
    peer.start()
    yield peer, gateway_end
    peer.close()


async def test_remote_io_samples_become_readings(coordinator: tuple[Coordinator, str]) -> None:
    peer, port = coordinator
    remote = REMOTE.hex().upper()
    config = XBeeConfig.model_validate(
        {
            "serial_port": port,
            "points": [
                {"remote": remote, "line": 0, "asset_id": "tank_3", "parameter": "level", "unit": "mm", "scale": 2.0},
                {"remote": remote, "line": 1, "asset_id": "tank_3", "parameter": "temp_raw"},
                {"remote": remote, "line": 4, "kind": "digital", "asset_id": "tank_3", "parameter": "pump_on"},
            ],
        }
    )
    async with NodeHarness(XBee, config.model_dump(mode="json"), "radio") as node:
        assert await node.poll() == {"out": [], "dlq": []}  # opened: the library asked its AT questions
        assert {b"AP", b"SH", b"SL"} <= set(peer.commands) and node.health == [None]
        peer.outgoing += [io_sample(512, 1023, True), io_sample(100, 0, False)]
        readings: list[dict[str, object]] = []
        for _ in range(20):
            readings += (await node.poll())["out"]
            if len(readings) >= 6:
                break
    assert [(r["parameter"], r["value"]) for r in readings] == [
        ("level", 1024.0),
        ("temp_raw", 1023.0),
        ("pump_on", 1.0),
        ("level", 200.0),
        ("temp_raw", 0.0),
        ("pump_on", 0.0),
    ]
    assert readings[0]["metadata"] == {"xbee_remote": remote}


async def test_data_frames_become_readings_and_bad_ones_go_to_the_dlq(coordinator: tuple[Coordinator, str]) -> None:
    peer, port = coordinator
    remote = REMOTE.hex().upper()
    stranger = bytes.fromhex("0013A20040000001")
    config = XBeeConfig.model_validate({"serial_port": port, "fields": [
        {"remote": remote, "byte_offset": 0, "byte_type": "int16", "asset_id": "kiln_2", "parameter": "temp",
         "scale": 0.1},
        {"remote": remote, "byte_offset": 2, "byte_type": "float32", "big_endian": False, "asset_id": "kiln_2",
         "parameter": "draft_pa"}]})  # fmt: skip
    async with NodeHarness(XBee, config.model_dump(mode="json"), "radio") as node:
        await node.poll()  # opened
        peer.outgoing += [
            data_frame(REMOTE, struct.pack(">h", -125) + struct.pack("<f", 2.5)),
            data_frame(REMOTE, b"\x01"),  # too short for either field
            data_frame(stranger, b"\x00\x01\x02\x03\x04\x05"),  # a radio nobody mapped
        ]
        readings: list[dict[str, object]] = []
        letters: list[dict[str, object]] = []
        for _ in range(20):
            emitted = await node.poll()
            readings, letters = readings + emitted["out"], letters + emitted["dlq"]
            if len(readings) + len(letters) >= 4:
                break
    assert [(r["asset_id"], r["parameter"], r["value"]) for r in readings] == [
        ("kiln_2", "temp", -12.5),
        ("kiln_2", "draft_pa", 2.5),
    ]
    assert [(letter["reasons"][0]["code"], letter["payload"]) for letter in letters] == [  # type: ignore[index]
        ("short_payload", b"\x01"),
        ("unknown_remote", b"\x00\x01\x02\x03\x04\x05"),
    ]
    assert "needs 2" in letters[0]["reasons"][0]["message"]  # type: ignore[index]


def test_an_xbee_node_must_map_something() -> None:
    with pytest.raises(ValueError, match="map at least one I/O pin"):
        XBeeConfig.model_validate({"serial_port": "/dev/ttyUSB0"})


async def test_a_missing_coordinator_is_degraded_and_retried(tmp_path: object) -> None:
    config = XBeeConfig.model_validate(
        {
            "serial_port": "/dev/nonexistent-xbee",
            "connection": {"reconnect_min_s": 0.01, "reconnect_max_s": 0.02},
            "points": [{"remote": "0013A20041B2C3D4", "line": 0, "asset_id": "a", "parameter": "p"}],
        }
    )
    async with NodeHarness(XBee, config.model_dump(mode="json"), "radio") as node:
        assert await node.poll() == {} and await node.poll() == {}
    assert len(node.health) == 2 and "cannot open XBee coordinator" in (node.health[0] or "")
