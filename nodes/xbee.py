"""`xbee` source (digi-xbee over pyserial): remote I/O samples received by a coordinator in API mode, mapped per
remote 64-bit address and pin. digi-xbee reads the port on its own thread; samples cross into asyncio whole."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Literal

from digi.xbee.devices import RemoteXBeeDevice, XBeeDevice
from digi.xbee.exception import XBeeException
from digi.xbee.io import IOLine, IOSample, IOValue
from pydantic import Field

from streamforge.engine.devices import Backoff, ConnectionSettings, Inbox, PointMapping
from streamforge.engine.records import now_utc
from streamforge.engine.sdk import Emitted, NodeConfig, Port, PortType, Record, SourceNode


class XBeePin(PointMapping):
    """One pin of one remote radio: analog (ADC counts, scale to units) or digital (0/1)."""

    remote: str = Field(pattern=r"^[0-9A-Fa-f]{16}$", description="The remote radio's 64-bit address")
    line: int = Field(ge=0, le=20, description="I/O line index: 0 for DIO0/AD0, 1 for DIO1/AD1, ...")
    kind: Literal["analog", "digital"] = "analog"


class XBeeConfig(NodeConfig):
    serial_port: str = Field(description="The coordinator's serial port, e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=1200, le=921_600)
    points: list[XBeePin] = Field(min_length=1)
    batch_size: int = Field(default=1000, ge=1)
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)


class XBee(SourceNode[XBeeConfig]):
    """Lifecycle: poll() opens the coordinator (in a thread: digi-xbee is blocking) with backoff, then takes the
    samples its callback queued. A sample from a remote or line with no mapping is skipped."""

    type = "xbee"
    category = "sources"
    icon = "radio"
    description = "XBee coordinator: remote I/O samples (API frames) mapped per remote address and pin"
    Config = XBeeConfig
    outputs = (Port("out", PortType.TELEMETRY, "telemetry.raw", description="Readings"),)

    async def start(self) -> None:
        self._device: XBeeDevice | None = None
        self._inbox: Inbox[tuple[str, IOSample]] = Inbox()
        self._backoff = Backoff(self.config.connection)
        self._pins: dict[str, list[XBeePin]] = {}
        for pin in self.config.points:
            self._pins.setdefault(pin.remote.upper(), []).append(pin)

    async def stop(self) -> None:
        if self._device is not None:
            await asyncio.to_thread(self._device.close)
            self._device = None

    def _open(self, loop: asyncio.AbstractEventLoop) -> XBeeDevice:
        device = XBeeDevice(self.config.serial_port, self.config.baudrate)
        device.set_sync_ops_timeout(self.config.connection.timeout_s)

        def received(sample: IOSample, remote: RemoteXBeeDevice, _when: Any) -> None:
            loop.call_soon_threadsafe(self._inbox.put, (str(remote.get_64bit_addr()).upper(), sample))

        device.open()
        device.add_io_sample_received_callback(received)
        return device

    async def poll(self) -> Emitted:
        if self._device is None or not self._device.is_open():
            try:
                self._device = await asyncio.to_thread(self._open, asyncio.get_running_loop())
            except (XBeeException, OSError) as exc:
                self.context.degraded(f"cannot open XBee coordinator on {self.config.serial_port}: {exc}")
                await asyncio.sleep(self._backoff.next_delay())
                return {}
            self._backoff.reset()
            self.context.healthy()
        samples = await self._inbox.take(self.config.batch_size, 1.0, 0.01)
        received_at = now_utc()
        return {"out": [r for remote, sample in samples for r in self._readings(remote, sample, received_at)]}

    def _readings(self, remote: str, sample: IOSample, received_at: datetime) -> list[Record]:
        readings = []
        for pin in self._pins.get(remote, ()):
            line = IOLine.get(pin.line)
            if pin.kind == "analog" and sample.has_analog_value(line):
                raw = float(sample.get_analog_value(line))
            elif pin.kind == "digital" and sample.has_digital_value(line):
                raw = 1.0 if sample.get_digital_value(line) == IOValue.HIGH else 0.0
            else:
                continue
            # The radio frame carries no clock: the coordinator's receive time is the reading's time.
            readings.append(pin.reading(raw, device_time=received_at, metadata={"xbee_remote": remote}))
        return readings


NODE = XBee
