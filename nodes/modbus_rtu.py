"""`modbus_rtu` source: the Modbus polling of `protocols.modbus` over a serial line (RS-485/RS-232)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.client.base import ModbusBaseClient

from streamforge.nodes.protocols.modbus import ModbusConfig, ModbusSource


class ModbusRtuConfig(ModbusConfig):
    serial_port: str = Field(description="e.g. /dev/ttyUSB0")
    baudrate: int = Field(default=9600, ge=300, le=921_600)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


class ModbusRtu(ModbusSource[ModbusRtuConfig]):
    type = "modbus_rtu"
    description = "Modbus RTU on a serial line: the same typed, scaled block reads as modbus_tcp"

    def client(self) -> ModbusBaseClient:
        config = self.config
        return AsyncModbusSerialClient(
            config.serial_port,
            baudrate=config.baudrate,
            parity=config.parity,
            stopbits=config.stopbits,
            bytesize=config.bytesize,
            timeout=config.connection.timeout_s,
            retries=0,
        )

    def peer(self) -> str:
        return str(self.config.serial_port)


NODE = ModbusRtu
