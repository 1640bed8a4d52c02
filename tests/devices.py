"""Simulated devices in the test's own event loop, as the nodes' real peers: a pymodbus TCP server holding known
registers, and an asyncua PLC offering plain and secure endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.server.server import Server
from cryptography.x509 import ObjectIdentifier
from cryptography.x509.oid import ExtendedKeyUsageOID
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

FLOAT_WORDS = list(struct.unpack(">HH", struct.pack(">f", 21.5)))  # big-endian words of 21.5
HOLDING = [1234, *FLOAT_WORDS, 0, 0, 0xFFFF, 0xFFFE, 7, 0, 0]  # 0: uint16, 1-2: float32, 5-6: int32 -2, 7: 7
COILS = [True, False, True, False, False, False, False, False]


def device(unit: int = 1) -> SimDevice:
    return SimDevice(
        unit,
        simdata=(
            [SimData(0, count=8, values=COILS, datatype=DataType.BITS)],
            [SimData(0, count=8, values=False, datatype=DataType.BITS)],
            [SimData(0, count=len(HOLDING), values=HOLDING, datatype=DataType.UINT16)],
            [SimData(0, count=2, values=[10, 20], datatype=DataType.UINT16)],
        ),
    )


POINTS: list[dict[str, Any]] = [
    {"asset_id": "press", "parameter": "count", "address": 0},
    {"asset_id": "press", "parameter": "temp", "address": 1, "data_type": "float32", "unit": "degC"},
    {"asset_id": "press", "parameter": "delta", "address": 5, "data_type": "int32"},
    {"asset_id": "press", "parameter": "speed", "address": 7, "scale": 0.5, "offset": 1},
    {"asset_id": "press", "parameter": "flow", "address": 1, "table": "input"},
    {"asset_id": "press", "parameter": "running", "address": 2, "table": "coil", "data_type": "bool"},
]


@contextlib.asynccontextmanager
async def tcp_server(port: int) -> AsyncIterator[ModbusTcpServer]:
    server = ModbusTcpServer([device()], address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.2)
    try:
        yield server
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Plc:
    endpoint: str
    temp: Node
    count: Node
    namespace: int


async def certificate(directory: Path, name: str, use: ObjectIdentifier) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.pem", directory / f"{name}.der"
    await setup_self_signed_certificate(key, cert, f"urn:streamforge:{name}", "127.0.0.1", [use], {"commonName": name})
    return cert, key


@contextlib.asynccontextmanager
async def running_plc(directory: Path, port: int) -> AsyncIterator[Plc]:
    """A simulated PLC: an OPC UA server offering NoSecurity and Basic256Sha256 with Sign or SignAndEncrypt."""
    cert, key = await certificate(directory, "plc", ExtendedKeyUsageOID.SERVER_AUTH)
    server = Server()
    await server.init()
    endpoint = f"opc.tcp://127.0.0.1:{port}/streamforge/"
    server.set_endpoint(endpoint)
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity, ua.SecurityPolicyType.Basic256Sha256_Sign,
                                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])  # fmt: skip
    await server.load_certificate(str(cert))
    await server.load_private_key(str(key))
    namespace = await server.register_namespace("urn:streamforge:test-plc")
    line = await server.nodes.objects.add_object(namespace, "Line1")
    temp = await line.add_variable(namespace, "Temp", 20.0)
    count = await line.add_variable(namespace, "Count", 7, ua.VariantType.Int32)
    async with server:
        yield Plc(endpoint, temp, count, namespace)
