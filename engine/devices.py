"""Shared parts of protocol source nodes: point mappings, binary frame fields, the inbox of pushed data."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from streamforge.engine.records import telemetry
from streamforge.engine.serde import Record

Classification = Literal["TELEMETRY", "EVENT", "ALARM"]
ByteType = Literal["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32"]
BYTE_LAYOUTS = {"uint8": "B", "int8": "b", "uint16": "H", "int16": "h", "uint32": "I", "int32": "i", "float32": "f"}
T = TypeVar("T")


class PointMapping(BaseModel):
    """What a device value becomes: which asset and parameter, in what unit, scaled how."""

    model_config = ConfigDict(extra="forbid")

    asset_id: str = Field(min_length=1, description="Asset the value belongs to, e.g. pump_1")
    parameter: str = Field(min_length=1, description="What is measured, e.g. pressure")
    unit: str | None = Field(default=None, description="Engineering unit after scaling, e.g. bar")
    classification: Classification = "TELEMETRY"
    scale: float = Field(default=1.0, description="value = raw * scale + offset")
    offset: float = 0.0

    def reading(
        self,
        raw: float | None,
        *,
        device_time: datetime | None = None,
        quality: str = "GOOD",
        metadata: dict[str, str] | None = None,
        asset_id: str | None = None,
        parameter: str | None = None,
    ) -> Record:
        """The telemetry record of one raw value (None: the read failed, quality BAD); `asset_id` and
        `parameter` replace the mapping's own (e.g. names filled in from an MQTT topic)."""
        value = None if raw is None else raw * self.scale + self.offset
        record = telemetry(asset_id or self.asset_id, parameter or self.parameter, value, unit=self.unit,
                           device_time=device_time, quality=quality if raw is not None else "BAD",
                           metadata=metadata)  # fmt: skip
        record["classification"] = self.classification
        return record


def unpack_number(payload: bytes, byte_offset: int, byte_type: ByteType, big_endian: bool) -> float:
    """The number at `byte_offset` of a binary frame; ValueError saying how many bytes it needed."""
    layout = (">" if big_endian else "<") + BYTE_LAYOUTS[byte_type]
    needed = byte_offset + struct.calcsize(layout)
    if needed > len(payload):
        raise ValueError(f"payload has {len(payload)} bytes; {byte_type} at offset {byte_offset} needs {needed}")
    return float(struct.unpack_from(layout, payload, byte_offset)[0])


class Inbox(Generic[T]):
    """What a device pushed (subscription callbacks, broker messages), taken by poll() in batches.

    Nothing here drops. MQTT bounds it by the broker's in-flight window; OPC UA notifications and XBee frames
    are bounded only by how long Kafka stays away (the worker's memory limit is the backstop)."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._arrived = asyncio.Event()

    def put(self, item: T) -> None:
        self.items.append(item)
        self._arrived.set()

    def wake(self) -> None:
        """Make a waiting take() return (e.g. the connection dropped)."""
        self._arrived.set()

    async def take(self, max_items: int, wait_s: float, linger_s: float) -> list[T]:
        """Up to max_items; waits up to wait_s for the first, then lingers so a batch can fill."""
        if not self.items:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout=wait_s)
        if self.items and len(self.items) < max_items and linger_s:
            await asyncio.sleep(linger_s)
        batch = self.items[:max_items]
        del self.items[: len(batch)]
        return batch
