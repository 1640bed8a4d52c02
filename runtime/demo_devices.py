"""Simulated plant devices for `streamforge up`'s demo: a Modbus TCP press PLC (pymodbus) and an OPC UA boiler
(asyncua), with values that move, so the demo flow reads through real protocols on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asyncua import ua
from asyncua.server.server import Server
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

MODBUS_PORT = 15020  # flows/demo.json reads these
OPCUA_PORT = 14840


@dataclass(frozen=True)
class DemoDevices:
    modbus: str
    opcua: str


def press_registers(now: float) -> list[int]:
    """Holding registers 0..3: speed (rpm, uint16), oil temperature (degC, float32 big-endian), stroke count."""
    speed = int(1400 + 100 * math.sin(now / 20))
    oil = 55 + 5 * math.sin(now / 90)
    return [speed, *struct.unpack(">HH", struct.pack(">f", oil)), int(now * 0.5) % 65536]


async def _press_action(function_code: int, start_address: int, address: int, count: int,
                        registers: list[int], values: list[int] | list[bool] | None) -> None:  # fmt: skip
    if function_code == 3:  # a holding-register read sees the values of this moment
        current = press_registers(time.time())
        registers[: len(current)] = current


@contextlib.asynccontextmanager
async def demo_devices(modbus_port: int = MODBUS_PORT, opcua_port: int = OPCUA_PORT) -> AsyncIterator[DemoDevices]:
    """Run both simulated devices until the block exits."""
    # asyncua logs every publish request at INFO: in a demo that buries the gateway's own log lines.
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    press = SimDevice(1, action=_press_action, simdata=(
        [SimData(0, count=8, values=[True, False, False, False, False, False, False, False], datatype=DataType.BITS)],
        [SimData(0, count=8, values=False, datatype=DataType.BITS)],
        [SimData(0, count=8, values=[*press_registers(time.time()), 0, 0, 0, 0], datatype=DataType.UINT16)],
        [SimData(0, count=2, values=0, datatype=DataType.UINT16)],
    ))  # fmt: skip
    modbus = ModbusTcpServer([press], address=("127.0.0.1", modbus_port))
    modbus_task = asyncio.create_task(modbus.serve_forever())

    boiler = Server()
    await boiler.init()
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/streamforge-demo/"
    boiler.set_endpoint(endpoint)
    boiler.set_server_name("StreamForge demo boiler")
    # Loopback-only demo without certificates; the demo flow opts in with allow_insecure.
    boiler.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    namespace = await boiler.register_namespace("urn:streamforge:demo")
    unit = await boiler.nodes.objects.add_object(namespace, "Boiler1")
    temperature = await unit.add_variable(namespace, "Temperature", 80.0)
    pressure = await unit.add_variable(namespace, "Pressure", 6.0)

    async def move() -> None:
        while True:
            now = time.time()
            await temperature.write_value(80 + 5 * math.sin(now / 30))
            await pressure.write_value(6 + 0.3 * math.sin(now / 7))
            await asyncio.sleep(0.5)

    async with boiler:
        mover = asyncio.create_task(move())
        try:
            yield DemoDevices(f"127.0.0.1:{modbus_port}", endpoint)
        finally:
            await modbus.shutdown()  # type: ignore[no-untyped-call]
            for task in (mover, modbus_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
