"""`opcua` source against an asyncua server as the device peer: subscriptions, polling, browse paths, status codes
to quality, secure channels refused until the server certificate is trusted."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes
from cryptography.x509.oid import ExtendedKeyUsageOID
from pydantic import ValidationError

from streamforge.engine.testing import NodeHarness
from streamforge.nodes.opcua import OpcUa, OpcUaConfig, quality_of
from streamforge.runtime.kafka.broker import free_port
from tests.devices import Plc, certificate, running_plc


@pytest.fixture
async def plc(tmp_path: Path) -> AsyncIterator[Plc]:
    async with running_plc(tmp_path, free_port()) as started:
        yield started


def node(config: dict[str, Any]) -> NodeHarness[OpcUa]:
    return NodeHarness(OpcUa, config, "plc")


def insecure(plc: Plc, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint": plc.endpoint,
        "security_mode": "None",
        "allow_insecure": True,
        "sampling_interval_ms": 50,
        "publishing_interval_ms": 50,
        "points": [
            {
                "asset_id": "line1",
                "parameter": "temp",
                "unit": "degC",
                "browse_path": f"{plc.namespace}:Line1/{plc.namespace}:Temp",
            },
            {"asset_id": "line1", "parameter": "count", "node_id": plc.count.nodeid.to_string()},
        ],
        **extra,
    }


async def readings_until(source: NodeHarness[OpcUa], wanted: Any, polls: int = 100) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    for _ in range(polls):
        seen += (await source.poll()).get("out", [])
        if wanted(seen):
            return seen
    raise AssertionError(f"not seen; got {[(r['parameter'], r['value'], r['quality']) for r in seen][-10:]}")


async def test_subscription_reports_changes_with_source_time_and_maps_bad_status(plc: Plc) -> None:
    async with node(insecure(plc)) as source:
        first = await readings_until(source, lambda rs: {r["parameter"] for r in rs} == {"temp", "count"})
        temp = next(r for r in first if r["parameter"] == "temp")
        assert (temp["value"], temp["quality"], temp["unit"]) == (20.0, "GOOD", "degC")
        assert temp["timestamps"]["device_time"] is not None  # the server's SourceTimestamp
        await plc.temp.write_value(21.5)
        await readings_until(source, lambda rs: any(r["value"] == 21.5 for r in rs))
        failed = ua.DataValue(
            ua.Variant(0.0, ua.VariantType.Double), StatusCode=ua.StatusCode(ua.UInt32(StatusCodes.BadSensorFailure))
        )
        await plc.temp.write_value(failed)
        bad = await readings_until(source, lambda rs: any(r["quality"] == "BAD" for r in rs))
        letter = next(r for r in bad if r["quality"] == "BAD")
        assert letter["value"] is None and letter["metadata"]["opcua_status"] == "BadSensorFailure"
        assert source.health == [None]  # connected once, never degraded


async def test_polling_reads_every_point(plc: Plc) -> None:
    async with node(insecure(plc, mode="poll", poll_interval_s=0.05)) as source:
        read = (await source.poll())["out"]
        assert {(r["parameter"], r["value"], r["quality"]) for r in read} == {
            ("temp", 20.0, "GOOD"),
            ("count", 7.0, "GOOD"),
        }


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_an_untrusted_server_certificate_is_refused_until_trusted(plc: Plc, tmp_path: Path, mode: str) -> None:
    cert, key = await certificate(tmp_path, "gateway", ExtendedKeyUsageOID.CLIENT_AUTH)
    pki = tmp_path / "pki"
    config = {
        **insecure(plc),
        "security_mode": mode,
        "allow_insecure": False,
        "certificate": str(cert),
        "private_key": str(key),
        "pki_dir": str(pki),
        "connection": {"reconnect_min_s": 0.05, "reconnect_max_s": 0.1},
    }
    async with node(config) as source:
        assert await source.poll() == {}
        assert "is not trusted" in (source.health[-1] or "")
        rejected = list((pki / "rejected").glob("*.der"))
        assert len(rejected) == 1
        (pki / "trusted").mkdir()
        shutil.move(rejected[0], pki / "trusted" / rejected[0].name)  # an operator checked and trusted it
        await readings_until(source, lambda rs: any(r["parameter"] == "temp" and r["value"] == 20.0 for r in rs))
        assert source.health[-1] is None


def test_insecure_and_deprecated_settings_must_be_asked_for() -> None:
    base = {"endpoint": "opc.tcp://plc:4840", "points": [{"asset_id": "a", "parameter": "p", "node_id": "i=1"}]}
    with pytest.raises(ValidationError, match="allow_insecure"):
        OpcUaConfig.model_validate({**base, "security_mode": "None"})
    with pytest.raises(ValidationError, match="deprecated"):
        OpcUaConfig.model_validate({**base, "security_policy": "Basic128Rsa15", "certificate": "c", "private_key": "k"})
    assert quality_of(ua.StatusCode(ua.UInt32(StatusCodes.UncertainLastUsableValue))) == "UNCERTAIN"


async def test_a_server_restart_is_degraded_then_resubscribed(tmp_path: Path) -> None:
    port = free_port()
    fast = {"timeout_s": 1, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
    async with running_plc(tmp_path, port) as first:
        source = node({**insecure(first), "connection": fast})
        await source.__aenter__()
        await readings_until(source, lambda rs: any(r["parameter"] == "temp" for r in rs))
    health = source.health
    await readings_until(source, lambda rs: bool(health) and health[-1] is not None, polls=60)
    async with running_plc(tmp_path, port) as second:
        await second.temp.write_value(30.5)
        await readings_until(source, lambda rs: any(r["value"] == 30.5 for r in rs), polls=100)
        assert health[-1] is None
    await source.__aexit__(None, None, None)
