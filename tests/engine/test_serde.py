"""Confluent wire format: every record type round-trips; bad records are named, their neighbours kept."""

from __future__ import annotations

import io
import struct
from datetime import UTC, timedelta
from typing import Any

import fastavro
import pytest

from streamforge.engine import serde
from streamforge.engine.schema_registry import InMemorySchemaRegistry
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import Decoder, Encoder, WireFormatError, schema_id_of
from tests.engine.samples import SAMPLES


def all_schemas() -> InMemorySchemaRegistry:
    """Ids 1..5 for the five record types, in SCHEMAS order."""
    registry = InMemorySchemaRegistry()
    for name, schema in SCHEMAS.items():
        registry.register_now(f"{name}-value", schema)
    return registry


@pytest.mark.parametrize("record_type", sorted(SCHEMAS))
async def test_round_trip_and_plain_fastavro_reads_the_body(record_type: str) -> None:
    registry = all_schemas()
    schema_id = await registry.register("x", SCHEMAS[record_type])
    value = Encoder(schema_id, SCHEMAS[record_type]).encode(SAMPLES[record_type])
    assert value[0] == 0 and struct.unpack(">I", value[1:5])[0] == schema_id
    decoded = (await Decoder(registry).decode_batch([value])).ok[0][1]
    assert decoded == SAMPLES[record_type]
    plain = fastavro.schemaless_reader(io.BytesIO(value[5:]), fastavro.parse_schema(SCHEMAS[record_type]), None)
    assert plain == SAMPLES[record_type]


async def test_decoder_fetches_each_schema_once() -> None:
    registry = all_schemas()
    encoder = Encoder(1, SCHEMAS["telemetry"])
    decoder = Decoder(registry)
    values = [encoder.encode(SAMPLES["telemetry"]) for _ in range(50)]
    for _ in range(3):
        result = await decoder.decode_batch(values)
        assert len(result.ok) == 50
    assert registry.lookups == 1


async def test_decoded_timestamps_are_shared_per_millisecond_and_the_memo_stays_bounded() -> None:
    registry = all_schemas()
    encoder = Encoder(1, SCHEMAS["telemetry"])
    sample = SAMPLES["telemetry"]
    start = sample["timestamps"]["gateway_time"]
    readings = [
        {**sample, "timestamps": {"device_time": None, "gateway_time": start + timedelta(milliseconds=i // 2)}}
        for i in range(2 * (serde._TIMESTAMPS_KEPT + 100))
    ]
    decoded = [
        r
        for _, r in (await Decoder(registry).decode_batch([value for _, value in encoder.encode_batch(readings).ok])).ok
    ]
    assert [r["timestamps"] for r in decoded] == [r["timestamps"] for r in readings]
    first, second, third = (r["timestamps"]["gateway_time"] for r in decoded[:3])
    assert first is second and second is not third and first.tzinfo == UTC
    assert len(serde._timestamps) <= serde._TIMESTAMPS_KEPT


def _bad(**changes: Any) -> dict[str, Any]:
    record = {**SAMPLES["telemetry"], **changes}
    return {k: v for k, v in record.items() if v is not _MISSING}


_MISSING = object()


@pytest.mark.parametrize(
    ("record", "pointer", "words"),
    [
        (_bad(value="eighty"), "/value", "got str 'eighty'"),
        (_bad(parameter=_MISSING), "/parameter", "missing"),
        (_bad(asset_id=17), "/asset_id", "expected string"),
        (_bad(quality="GREAT"), "/quality", "one of GOOD, SUSPECT, UNCERTAIN, BAD"),
        (_bad(timestamps={"device_time": None}), "/timestamps/gateway_time", "missing"),
    ],
)
def test_bad_record_is_rejected_alone_with_field_and_record_named(
    record: dict[str, Any], pointer: str, words: str
) -> None:
    good = SAMPLES["telemetry"]
    result = Encoder(1, SCHEMAS["telemetry"]).encode_batch([good, record, good])
    assert [index for index, _ in result.ok] == [0, 2]
    (error,) = result.errors
    assert error.index == 1 and error.pointer == pointer
    assert words in error.message
    text = str(error)
    assert "record #1" in text and pointer in text
    if isinstance(record.get("asset_id"), str):
        assert "asset_id='line_1_sensor_01'" in text


def test_encode_raises_with_field_named() -> None:
    with pytest.raises(ValueError, match=r"field /value: expected"):
        Encoder(1, SCHEMAS["telemetry"]).encode(_bad(value="x"))


def test_non_object_is_rejected() -> None:
    result = Encoder(1, SCHEMAS["telemetry"]).encode_batch(["not a record"])  # type: ignore[list-item]
    assert "expected an object" in result.errors[0].message


@pytest.mark.parametrize(
    ("value", "words"),
    [(b"\x00\x00", "shorter than the 5-byte header"), (b"\x01\x00\x00\x00\x01abc", "magic byte is 1")],
)
def test_wire_format_errors(value: bytes, words: str) -> None:
    with pytest.raises(WireFormatError, match=words):
        schema_id_of(value)


async def test_undecodable_value_is_reported_and_neighbours_decoded() -> None:
    encoder = Encoder(1, SCHEMAS["telemetry"])
    good = encoder.encode(SAMPLES["telemetry"])
    result = await Decoder(all_schemas()).decode_batch([good, good[:9], b"junk", good])
    assert [index for index, _ in result.ok] == [0, 3]
    assert [error.index for error in result.errors] == [1, 2]
    assert "body does not match schema id 1" in result.errors[0].message
