"""`modbus_tcp` source: the Modbus polling of `protocols.modbus` over TCP."""

from __future__ import annotations

from pydantic import Field
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient

from streamforge.nodes.protocols.modbus import ModbusConfig, ModbusSource


class ModbusTcpConfig(ModbusConfig):
    host: str
    port: int = Field(default=502, ge=1, le=65535)


class ModbusTcp(ModbusSource[ModbusTcpConfig]):
    type = "modbus_tcp"
    description = "Modbus TCP: holding/input registers, coils, discrete inputs; typed, scaled, block reads"

    def client(self) -> ModbusBaseClient:
        connection = self.config.connection
        return AsyncModbusTcpClient(self.config.host, port=self.config.port, timeout=connection.timeout_s, retries=0)

    def peer(self) -> str:
        return f"{self.config.host}:{self.config.port}"


NODE = ModbusTcp
