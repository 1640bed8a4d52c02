"""Modbus polling that `modbus_tcp` and `modbus_rtu` share: block reads that coalesce adjacent registers, typed
decoding with word and byte order, scaling, per-device unit ids; failed reads become BAD readings."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Literal, TypeVar

from pydantic import Field, model_validator
from pymodbus.client.base import ModbusBaseClient
from pymodbus.exceptions import ModbusException

from streamforge.engine.devices import PointMapping
from streamforge.engine.retry import ConnectionSettings
from streamforge.engine.sdk import Emitted, NodeConfig, PeerUnavailable, Port, PortType, Record, SourceNode

Table = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
WORDS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "float64": 4, "bool": 1}
STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}


class RegisterPoint(PointMapping):
    """One value read from the device: where it is, how it is encoded, what it becomes."""

    table: Table = "holding"
    address: int = Field(ge=0, le=65535, description="Zero-based address in the table")
    data_type: DataType = "uint16"
    word_order: Literal["big", "little"] = Field(default="big", description="big: first register is most significant")
    byte_order: Literal["big", "little"] = Field(default="big", description="byte order inside each register")
    unit_id: int | None = Field(default=None, ge=0, le=255, description="Overrides the device's unit id")

    @model_validator(mode="after")
    def _bits_are_bool(self) -> RegisterPoint:
        if self.table in ("coil", "discrete") and self.data_type != "bool":
            raise ValueError(f"a {self.table} is a bit: data_type must be bool")
        return self

    @property
    def width(self) -> int:
        return 1 if self.table in ("coil", "discrete") else WORDS[self.data_type]

    def decode(self, words: list[int] | list[bool]) -> float:
        """The raw value of this point from its slice of a block read."""
        if self.table in ("coil", "discrete") or self.data_type == "bool":
            return 1.0 if words[0] else 0.0
        ordered = list(words) if self.word_order == "big" else list(reversed(words))
        data = b"".join(int(w).to_bytes(2, "big")[:: 1 if self.byte_order == "big" else -1] for w in ordered)
        return float(struct.unpack(">" + STRUCT[self.data_type], data)[0])


class ModbusConfig(NodeConfig):
    unit_id: int = Field(default=1, ge=0, le=255, description="Device (slave) id; a point may override it")
    poll_interval_s: float = Field(default=1.0, gt=0, description="Time between the starts of two polls")
    max_block: int = Field(default=120, ge=1, le=125, description="Registers per read, at most")
    max_gap: int = Field(default=8, ge=0, description="Read across gaps this small instead of issuing two reads")
    points: list[RegisterPoint] = Field(min_length=1)
    connection: ConnectionSettings = Field(default_factory=ConnectionSettings)


@dataclass
class Block:
    """One read request: consecutive addresses of one table of one unit, and the points inside it."""

    unit_id: int
    table: Table
    start: int
    count: int
    points: list[RegisterPoint]


def plan_blocks(points: list[RegisterPoint], default_unit: int, max_block: int, max_gap: int) -> list[Block]:
    """Coalesce points into as few reads as possible without exceeding max_block or skipping more than max_gap."""
    blocks: list[Block] = []

    def key(point: RegisterPoint) -> tuple[int, Table, int]:
        return (point.unit_id if point.unit_id is not None else default_unit, point.table, point.address)

    for point in sorted(points, key=key):
        unit, table, _address = key(point)
        last = blocks[-1] if blocks else None
        end = point.address + point.width
        if (
            last is not None
            and (last.unit_id, last.table) == (unit, table)
            and point.address <= last.start + last.count + max_gap
            and end - last.start <= max_block
        ):
            last.count = max(last.count, end - last.start)
            last.points.append(point)
        else:
            blocks.append(Block(unit, table, point.address, point.width, [point]))
    return blocks


ModbusConfigT = TypeVar("ModbusConfigT", bound=ModbusConfig)


class ModbusSource(SourceNode[ModbusConfigT]):
    """Polls every `poll_interval_s` on the node's clock. A read that fails gives its points quality BAD and the
    node DEGRADED; a connection that cannot be made or is lost is the runtime's to retry (every point BAD at each
    failed attempt), while polling resumes once it is back."""

    category = "sources"
    icon = "cpu"
    outputs = (Port("out", PortType.TELEMETRY, "telemetry.raw", description="Readings"),)

    def client(self) -> ModbusBaseClient:
        raise NotImplementedError

    def peer(self) -> str:
        raise NotImplementedError

    async def start(self) -> None:
        config = self.config
        self._blocks = plan_blocks(config.points, config.unit_id, config.max_block, config.max_gap)
        self._client: ModbusBaseClient | None = None
        self._next_poll = self.clock.monotonic()

    async def connect(self) -> None:
        client = self.client()
        self._client = client
        if not await client.connect():
            raise PeerUnavailable(f"cannot connect to {self.peer()}")

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def unreachable(self, problem: str) -> Emitted:
        return {"out": self._failed(self.config.points, "connect_failed")}

    async def poll(self) -> Emitted:
        clock = self.clock
        await clock.sleep(self._next_poll - clock.monotonic())
        self._next_poll = max(self._next_poll + self.config.poll_interval_s, clock.monotonic())
        client = self._client
        if client is None or not client.connected:
            raise PeerUnavailable(f"lost the connection to {self.peer()}")
        readings: list[Record] = []
        problems = []
        for block in self._blocks:
            started = time.perf_counter()
            try:
                values = await self._read(client, block)
            except (TimeoutError, ModbusException, OSError) as exc:  # timeout, bad frame, link down
                problems.append(f"{block.table}@{block.start} unit {block.unit_id}: {exc}")
                readings += self._failed(block.points, type(exc).__name__)
                if not client.connected:
                    break
                continue
            # Modbus carries no timestamp: the moment the answer arrived is the reading's time.
            read_at, latency = clock.now(), f"{(time.perf_counter() - started) * 1000:.1f}"
            for point in block.points:
                offset = point.address - block.start
                raw = point.decode(values[offset : offset + point.width])
                readings.append(
                    point.reading(raw, device_time=read_at, metadata={"latency_ms": latency, "time_source": "gateway"})
                )
        if problems:
            self.context.degraded("; ".join(problems)[:500])
        else:
            self.context.healthy()
        return {"out": readings}

    async def _read(self, client: ModbusBaseClient, block: Block) -> list[int] | list[bool]:
        reader = {
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
        }[block.table]
        response = await reader(block.start, count=block.count, device_id=block.unit_id)
        if response.isError():  # an exception response: the device answered "no" (bad address, busy, ...)
            raise ModbusException(f"exception response {getattr(response, 'exception_code', '?')}")
        if block.table in ("coil", "discrete"):
            return list(response.bits[: block.count])
        return list(response.registers)

    def _failed(self, points: list[RegisterPoint], why: str) -> list[Record]:
        return [point.reading(None, metadata={"error": why}) for point in points]
