"""The compiled Avro reader and writer read what fastavro reads and write the bytes it writes, for every type;
what is not a body, or not a value of its type, is refused."""

from __future__ import annotations

import io
import random
import string
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from fastavro.logical_writers import LOGICAL_WRITERS

from streamforge.engine.avro_compiled import BodyReader, compile_reader, compile_writer
from streamforge.engine.records import from_epoch_ms
from streamforge.engine.schemas import SCHEMAS
from streamforge.engine.serde import Encoder, body_reader
from tests.engine.samples import SAMPLES

POINT = {
    "type": "record",
    "name": "Point",
    "fields": [{"name": "x", "type": "double"}, {"name": "tag", "type": ["null", "string", "long"]}],
}
EVERYTHING: dict[str, Any] = {
    "type": "record",
    "name": "Everything",
    "namespace": "test.ns",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": {"type": "long"}},
        {"name": "ratio", "type": "float"},
        {"name": "exact", "type": "double"},
        {"name": "blob", "type": "bytes"},
        {"name": "text", "type": "string"},
        {"name": "nothing", "type": "null"},
        {"name": "digest", "type": {"type": "fixed", "name": "Digest", "size": 4}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN", "BLUE"]}},
        {"name": "favourite", "type": "Color"},  # a short name, resolved in the enclosing namespace
        {"name": "points", "type": {"type": "array", "items": POINT}},
        {"name": "origin", "type": "test.ns.Point"},  # a full name
        {"name": "series", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
        {"name": "when", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "label", "type": {"type": "string", "logicalType": "made-up"}},  # unknown: read as its base type
        {
            "name": "elsewhere",
            "type": {
                "type": "record",
                "name": "Other",
                "namespace": "other.ns",
                "fields": [
                    {"name": "shade", "type": "test.ns.Color"},
                    {"name": "mark", "type": {"type": "fixed", "name": "Mark", "size": 1}},
                ],
            },
        },
        {"name": "mark_again", "type": "other.ns.Mark"},
        {"name": "reading", "type": ["null", "string", "double", "long", "boolean"]},  # first type that fits
        {"name": "nested", "type": ["null", ["string", "long"]]},  # not Avro (the event schema has one), as fastavro
        {"name": "mode", "type": "Color", "default": "GREEN"},
        {"name": "extras", "type": {"type": "map", "values": "string"}, "default": {}},
    ],
}
OPTIONAL_FIELDS = ("mode", "extras")  # have defaults: a record may leave them out
EDGE_LONGS = [0, 1, -1, 63, -64, 64, -65, 8191, 8192, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63)]
EDGE_INTS = [0, 1, -1, 63, 64, -65, 2**31 - 1, -(2**31)]


def some_text(rng: random.Random) -> str:
    return rng.choice(["", "é", "日本語", "line_1_sensor_01", "".join(rng.choices(string.printable, k=200))])


def everything(rng: random.Random) -> dict[str, Any]:
    return {
        "flag": rng.random() < 0.5,
        "small": rng.choice(EDGE_INTS),
        "big": rng.choice(EDGE_LONGS),
        "ratio": rng.choice([0.0, -1.5, 3.25, float("inf")]),
        "exact": rng.choice([0.0, -0.1, 1e308, float("-inf"), rng.random()]),
        "blob": bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 100]))),
        "text": some_text(rng),
        "nothing": None,
        "digest": bytes(rng.randrange(256) for _ in range(4)),
        "color": rng.choice(["RED", "GREEN", "BLUE"]),
        "favourite": rng.choice(["RED", "GREEN", "BLUE"]),
        "points": [
            {"x": rng.random(), "tag": rng.choice([None, some_text(rng), rng.choice(EDGE_LONGS)])}
            for _ in range(rng.choice([0, 1, 70]))
        ],
        "origin": {"x": 0.0, "tag": None},
        "series": {
            some_text(rng) + str(i): [rng.choice(EDGE_LONGS) for _ in range(rng.choice([0, 3]))]
            for i in range(rng.choice([0, 1, 200]))
        },
        "when": rng.choice([None, from_epoch_ms(rng.choice([0, -86_400_000, 1_780_000_000_123]))]),
        "label": some_text(rng),
        "elsewhere": {"shade": "BLUE", "mark": b"\x80"},
        "mark_again": b"\xff",
        "reading": rng.choice([None, "on", 5, -(2**40), 2.5, True]),
        "nested": rng.choice([None, "x", 7]),
        **{name: value for name, value in (("mode", "BLUE"), ("extras", {"a": "b"})) if rng.random() < 0.5},
    }


def fastavro_reads(schema: Any, body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), fastavro.parse_schema(schema), None)


def body_of(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def compiled(schema: Any) -> BodyReader:
    reader = compile_reader(schema, from_epoch_ms)
    assert reader is not None
    return reader


def written(schema: Any, record: Any) -> bytes:
    writer = compile_writer(schema, LOGICAL_WRITERS["long-timestamp-millis"])
    assert writer is not None
    out = bytearray(b"head")
    writer(record, out)
    assert out[:4] == b"head"
    return bytes(out[4:])


def test_every_type_reads_and_writes_as_fastavro_does() -> None:
    rng = random.Random(15)
    read = compiled(EVERYTHING)
    for _ in range(300):
        record = everything(rng)
        body = body_of(EVERYTHING, record)
        assert written(EVERYTHING, record) == body
        assert read(b"\0head" + body, 5) == fastavro_reads(EVERYTHING, body)


@pytest.mark.parametrize("record_type", sorted(SCHEMAS))
def test_record_types_read_and_write_as_fastavro_does(record_type: str) -> None:
    schema, sample = SCHEMAS[record_type], SAMPLES[record_type]
    body = body_of(schema, sample)
    assert written(schema, sample) == body
    assert compiled(schema)(body, 0) == sample == fastavro_reads(schema, body)


@pytest.mark.parametrize(
    ("field", "value", "refused"),
    [
        ("small", 2**31, OverflowError),
        ("big", -(2**63) - 1, OverflowError),
        ("big", 1.5, TypeError),
        ("exact", "1.5", struct.error),
        ("text", 3, AttributeError),
        ("blob", "text", TypeError),
        ("digest", b"12345", ValueError),
        ("color", "PURPLE", KeyError),
        ("reading", [1], TypeError),
        ("points", [{"x": None, "tag": None}], struct.error),
        ("series", {"a": ["1"]}, TypeError),
        ("origin", None, AttributeError),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(field: str, value: Any, refused: type[Exception]) -> None:
    record = {**everything(random.Random(1)), field: value}
    with pytest.raises(refused):
        written(EVERYTHING, record)


def test_blocks_with_a_byte_size_are_read() -> None:
    """Writers may prefix a block with a negative count and its size in bytes (the spec's skippable blocks)."""
    schema = {"type": "array", "items": "long"}
    body = bytes([3, 4, 2, 4, 2, 6, 0])  # count -2, size 2: [1, 2]; count 1: [3]; end
    assert compiled(schema)(body, 0) == [1, 2, 3] == fastavro_reads(schema, body)


def test_a_body_cut_short_anywhere_is_refused() -> None:
    rng = random.Random(4)
    read = compiled(EVERYTHING)
    body = body_of(EVERYTHING, everything(rng))
    for cut in range(len(body)):
        with pytest.raises((IndexError, EOFError, ValueError, struct.error)):  # UnicodeDecodeError is a ValueError
            read(body[:cut], 0)


@pytest.mark.parametrize(
    ("schema", "body", "words"),
    [
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, bytes([4]), "tuple index out of range"),
        ({"type": "enum", "name": "E", "symbols": ["A", "B"]}, bytes([1]), "negative index of enum E"),
        (["null", "long"], bytes([4]), "union index 2 of 2 branches"),
        (["null", "long"], bytes([1]), "union index -1 of 2 branches"),
        ("string", bytes([3]), "negative string length"),
        ("bytes", bytes([1]), "negative bytes length"),
        ("string", bytes([2, 0xFF]), "can't decode byte 0xff"),
    ],
)
def test_what_is_not_a_body_is_refused_with_the_reason(schema: Any, body: bytes, words: str) -> None:
    with pytest.raises((ValueError, IndexError)) as refused:
        compiled(schema)(body, 0)
    assert words in str(refused.value)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "bytes", "logicalType": "decimal", "precision": 5, "scale": 2},
        {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]},
    ],
    ids=["decimal", "recursive"],
)
def test_what_it_does_not_cover_is_left_to_fastavro(schema: Any) -> None:
    assert compile_reader(schema, from_epoch_ms) is None
    assert compile_writer(schema, LOGICAL_WRITERS["long-timestamp-millis"]) is None
    record: Any = {"next": {"next": None}} if schema["type"] == "record" else fastavro_reads(schema, b"\x04\x01\x02")
    value = Encoder(7, schema, key_field=None).encode(record)
    assert value[5:] == body_of(schema, record)
    assert body_reader(schema)(value, 5) == record


@pytest.mark.parametrize(
    "union",
    [["null", "float", "double"], ["string", POINT], ["null", {"type": "array", "items": "long"}, "long"]],
    ids=["float-and-double", "record-beside-string", "array-beside-long"],
)
def test_unions_fastavro_resolves_by_trying_values_are_left_to_it(union: list[Any]) -> None:
    """fastavro picks double over an earlier float, and the record with most fields present: not by type alone."""
    assert compile_writer(union, LOGICAL_WRITERS["long-timestamp-millis"]) is None
    assert compile_reader(union, from_epoch_ms) is not None  # reading needs no choice


def test_equal_strings_read_from_different_values_are_one_object() -> None:
    """Names recur in every reading: a batch of readings held in memory shares them (map keys and values too)."""
    schema = {"type": "record", "name": "Named", "fields": [
        {"name": "asset_id", "type": "string"}, {"name": "unit", "type": ["null", "string"]},
        {"name": "metadata", "type": {"type": "map", "values": "string"}}]}  # fmt: skip
    read = compiled(schema)
    first, second = (read(body_of(schema, {"asset_id": "pump_" + "7", "unit": "bar", "metadata": {"line": "2"}}), 0)
                     for _ in range(2))  # fmt: skip
    assert first == second
    assert first["asset_id"] is second["asset_id"] and first["unit"] is second["unit"]
    ((key_1, value_1),), ((key_2, value_2),) = first["metadata"].items(), second["metadata"].items()
    assert key_1 is key_2 and value_1 is value_2


def test_timestamps_are_made_by_the_function_given() -> None:
    made: list[int] = []

    def timestamp(milliseconds: int) -> datetime:
        made.append(milliseconds)
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=milliseconds)

    schema = {"type": "long", "logicalType": "timestamp-millis"}
    reader = compile_reader(schema, timestamp)
    assert reader is not None
    assert reader(body_of(schema, datetime(2026, 12, 4, tzinfo=UTC)), 0) == datetime(2026, 12, 4, tzinfo=UTC)
    assert made == [1_796_342_400_000]


def test_a_schemas_names_are_data_in_the_compiled_code_never_source() -> None:
    """Schemas come from the registry, which any client may write to: a name is quoted, never spliced in."""
    hostile = "E'); raise SystemExit('injected"
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {
                "name": "x'] + __import__('os').getcwd() + ['",
                "type": {"type": "enum", "name": hostile, "symbols": ["A"]},
            }
        ],
    }
    body = bytes([0])
    assert compiled(schema)(body, 0) == {"x'] + __import__('os').getcwd() + ['": "A"}
    assert written(schema, {"x'] + __import__('os').getcwd() + ['": "A"}) == body
    with pytest.raises(ValueError, match="negative index of enum"):
        compiled(schema)(bytes([1]), 0)
