"""`xbee` source (digi-xbee over pyserial): what a coordinator in API mode receives from remote radios, mapped per
remote 64-bit address: I/O samples (frame 0x92) per pin, and data frames (0x90, e.g. from sensor firmware) per
byte field. digi-xbee reads the port on its own thread; frames cross into asyncio whole."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

from digi.xbee.devices import RemoteXBeeDevice, XBeeDevice
from digi.xbee.exception import XBeeException
from digi.xbee.io import IOLine, IOSample, IOValue
from digi.xbee.models.message import XBeeMessage
from pydantic import Field, model_validator

from streamforge.engine.devices import ByteType, Inbox, PointMapping, unpack_number
from streamforge.engine.records import dead_letter, reason
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import Emitted, NodeConfig, PeerUnavailable, Port, PortType, Record, SourceNode


class XBeePin(PointMapping):
    """One pin of one remote radio: analog (ADC counts, scale to units) or digital (0/1)."""

    remote: str = Field(pattern=r"^[0-9A-Fa-f]{16}$", description="The remote radio's 64-bit address")
    line: int = Field(ge=0, le=20, description="I/O line index: 0 for DIO0/AD0, 1 for DIO1/AD1, ...")
    kind: Literal["analog", "digital"] = "analog"


class XBeeDataField(PointMapping):
    """One number in the data frames of one remote radio, by position and binary type."""

    remote: str = Field(pattern=r"^[0-9A-Fa-f]{16}$", description="The remote radio's 64-bit address")
    byte_offset: int = Field(ge=0, description="Position in the frame's data")
    byte_type: ByteType = "int16"
    big_endian: bool = True


class XBeeConfig(NodeConfig):
    serial_port: str = Field(description="The coordinator's serial port, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=1200, le=921_600)
    points: list[XBeePin] = Field(default_factory=list, description="I/O sample pins")
    fields: list[XBeeDataField] = Field(default_factory=list, description="Numbers in data frames")
    batch_size: int = Field(default=1000, ge=1)
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)

    @model_validator(mode="after")
    def _something_mapped(self) -> XBeeConfig:
        if not self.points and not self.fields:
            raise ValueError("map at least one I/O pin (points) or data frame field (fields)")
        return self


class XBee(SourceNode[XBeeConfig]):
    """Lifecycle: connect() opens the coordinator (in a thread: digi-xbee is blocking); poll() takes the frames its
    callbacks queued; a port that cannot be opened or goes away is the runtime's to retry, DEGRADED meanwhile.
    An I/O sample from a remote or line with no mapping is skipped (radios sample every enabled pin); a data frame
    from a remote with no fields, or too short for them, goes to the DLQ."""

    type = "xbee"
    category = "sources"
    icon = "radio"
    description = "XBee coordinator: remote I/O samples and data frames, mapped per remote address"
    outputs = (
        Port("out", PortType.TELEMETRY, "telemetry.raw", description="Readings"),
        Port("dlq", PortType.DLQ, "dlq.telemetry", description="Data frames that could not be mapped, with reasons"),
    )

    async def start(self) -> None:
        self._device: XBeeDevice | None = None
        self._inbox: Inbox[tuple[str, IOSample | bytes]] = Inbox()
        self._pins: dict[str, list[XBeePin]] = {}
        for pin in self.config.points:
            self._pins.setdefault(pin.remote.upper(), []).append(pin)
        self._fields: dict[str, list[XBeeDataField]] = {}
        for field in self.config.fields:
            self._fields.setdefault(field.remote.upper(), []).append(field)

    async def connect(self) -> None:
        try:
            self._device = await asyncio.to_thread(self._open, asyncio.get_running_loop())
        except (XBeeException, OSError) as exc:
            raise PeerUnavailable(f"cannot open XBee coordinator on {self.config.serial_port}: {exc}") from exc

    async def close(self) -> None:
        if self._device is not None:
            await asyncio.to_thread(self._device.close)
            self._device = None

    def _open(self, loop: asyncio.AbstractEventLoop) -> XBeeDevice:
        device = XBeeDevice(self.config.serial_port, self.config.baudrate)
        device.set_sync_ops_timeout(self.config.connection.timeout_s)

        def sampled(sample: IOSample, remote: RemoteXBeeDevice, _when: Any) -> None:
            loop.call_soon_threadsafe(self._inbox.put, (str(remote.get_64bit_addr()).upper(), sample))

        def received(message: XBeeMessage) -> None:
            remote = str(message.remote_device.get_64bit_addr()).upper()
            loop.call_soon_threadsafe(self._inbox.put, (remote, bytes(message.data)))

        device.open()
        device.add_io_sample_received_callback(sampled)
        device.add_data_received_callback(received)
        return device

    async def poll(self) -> Emitted:
        if self._device is None or not self._device.is_open():
            raise PeerUnavailable(f"XBee coordinator on {self.config.serial_port} is closed")
        frames = await self._inbox.take(self.config.batch_size, 1.0, 0.01)
        received_at = (
            self.clock.now()
        )  # radio frames carry no clock: the coordinator's receive time is the reading's time
        readings: list[Record] = []
        letters: list[Record] = []
        for remote, frame in frames:
            if isinstance(frame, IOSample):
                readings += self._sample_readings(remote, frame, received_at)
                continue
            fields = self._fields.get(remote, [])
            problem = None if fields else reason("unknown_remote", f"data frame from {remote}, which has no fields")
            try:
                values = [unpack_number(frame, f.byte_offset, f.byte_type, f.big_endian) for f in fields]
            except ValueError as short:
                problem = reason("short_payload", str(short))
            if problem is not None:
                letters.append(dead_letter(self.context.node_id, [problem], frame, f"xbee:{remote}"))
                continue
            readings += [field.reading(value, device_time=received_at, metadata={"xbee_remote": remote})
                         for field, value in zip(fields, values, strict=True)]  # fmt: skip
        return {"out": readings, "dlq": letters}

    def _sample_readings(self, remote: str, sample: IOSample, received_at: datetime) -> list[Record]:
        readings = []
        for pin in self._pins.get(remote, ()):
            line = IOLine.get(pin.line)
            if pin.kind == "analog" and sample.has_analog_value(line):
                raw = float(sample.get_analog_value(line))
            elif pin.kind == "digital" and sample.has_digital_value(line):
                raw = 1.0 if sample.get_digital_value(line) == IOValue.HIGH else 0.0
            else:
                continue
            readings.append(pin.reading(raw, device_time=received_at, metadata={"xbee_remote": remote}))
        return readings


NODE = XBee
