"""Avro encoding and decoding in the Confluent wire format: magic byte 0, 4-byte schema id, body."""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import fastavro
import fastavro.read
from fastavro.logical_writers import LOGICAL_WRITERS
from fastavro.validation import ValidationError, validate

from streamforge.engine.avro_compiled import BodyReader, BodyWriter, compile_reader, compile_writer
from streamforge.engine.records import from_epoch_ms
from streamforge.engine.schema_registry import SchemaRegistry
from streamforge.engine.schemas import Schema

MAGIC = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size

Record = dict[str, Any]


class WireFormatError(ValueError):
    """Bytes that are not a Confluent-framed Avro value."""


@dataclass(frozen=True)
class RecordError:
    """Why one record of a batch could not be encoded or decoded; the rest of the batch goes on."""

    index: int
    pointer: str
    message: str
    record_key: str | None = None

    def __str__(self) -> str:
        where = f"record #{self.index}" + (f" ({self.record_key})" if self.record_key else "")
        return f"{where}: field {self.pointer or '/'}: {self.message}"


@dataclass
class BatchResult:
    """Per-record outcome of a batch call: values for the good ones, errors for the rest."""

    ok: list[tuple[int, Any]] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)


def _field_index(schema: Schema) -> dict[str, tuple[str, Any]]:
    """Map "<record full name>.<field>" to the field's JSON pointer and declared type, for error messages."""
    index: dict[str, tuple[str, Any]] = {}

    def walk(node: Any, pointer: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, pointer)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind == "record":
                for child in node["fields"]:
                    child_pointer = f"{pointer}/{child['name']}"
                    index.setdefault(f"{node['name']}.{child['name']}", (child_pointer, child["type"]))
                    walk(child["type"], child_pointer)
            elif kind == "array":
                walk(node["items"], f"{pointer}/-")
            elif kind == "map":
                walk(node["values"], f"{pointer}/*")
            elif isinstance(kind, dict | list):
                walk(kind, pointer)

    walk(schema, "")
    return index


class Encoder:
    """Encodes records of one subject. The schema is parsed and registered once, up front."""

    def __init__(self, schema_id: int, schema: Schema, key_field: str | None = "asset_id") -> None:
        self.schema_id = schema_id
        self.parsed = fastavro.parse_schema(schema)
        self.header = HEADER.pack(MAGIC, schema_id)
        self.key_field = key_field
        self._fields = _field_index(cast(Schema, self.parsed))
        self._write = compile_writer(schema, LOGICAL_WRITERS["long-timestamp-millis"]) or self._fastavro_writer()

    def _fastavro_writer(self) -> BodyWriter:
        """For a schema the compiled writer leaves to fastavro."""
        buffer, parsed, writer = io.BytesIO(), self.parsed, fastavro.schemaless_writer

        def write(record: Any, out: bytearray) -> None:
            buffer.seek(0)
            buffer.truncate()
            writer(buffer, parsed, record)
            out += buffer.getvalue()

        return write

    def encode(self, record: Record) -> bytes:
        """One record; raises ValueError naming the offending field."""
        result = self.encode_batch((record,))
        if result.errors:
            raise ValueError(str(result.errors[0]))
        value: bytes = result.ok[0][1]
        return value

    def encode_batch(self, records: Sequence[Record]) -> BatchResult:
        """Every record of the batch: the good ones encoded, each bad one with its error."""
        result = BatchResult()
        header, write = self.header, self._write
        for index, record in enumerate(records):
            value = bytearray(header)
            try:
                write(record, value)
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error) as exc:
                result.errors.append(self._explain(index, record, exc))
                continue
            result.ok.append((index, bytes(value)))
        return result

    def _explain(self, index: int, record: Any, exc: Exception) -> RecordError:
        """Slow path, only for failures: validate to find exactly which field is wrong."""
        key = None
        if isinstance(record, dict) and self.key_field:
            key = f"{self.key_field}={record.get(self.key_field)!r}"
        if not isinstance(record, dict):
            return RecordError(index, "", f"expected an object, got {type(record).__name__}", key)
        try:
            validate(record, self.parsed, raise_errors=True)
        except ValidationError as invalid:
            problem = invalid.errors[0]
            pointer, declared = self._fields.get(str(problem.field), (f"/{problem.field}", problem.schema))
            expected = _type_name(declared)
            if problem.datum is None:
                message = f"missing; expected {expected}"
            else:
                message = f"expected {expected}, got {type(problem.datum).__name__} {problem.datum!r:.60}"
            return RecordError(index, pointer, message, key)
        return RecordError(index, "", str(exc), key)


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        if schema.get("type") == "enum":
            return "one of " + ", ".join(schema["symbols"])
        return str(schema.get("logicalType") or schema.get("name") or _type_name(schema.get("type")))
    if isinstance(schema, list):
        return " or ".join(_type_name(branch) for branch in schema)
    return str(schema)


def schema_id_of(value: bytes) -> int:
    """The schema id in a framed value's header."""
    if len(value) < HEADER_SIZE:
        raise WireFormatError(f"value of {len(value)} bytes is shorter than the 5-byte header")
    magic, schema_id = HEADER.unpack_from(value)
    if magic != MAGIC:
        raise WireFormatError(f"magic byte is {magic}, expected {MAGIC}: not Confluent-framed Avro")
    return int(schema_id)


# Decoding, timestamp-millis becomes an aware datetime: building a new one per field costs ~0.7 µs, two per reading.
# Readings of one poll share their timestamps, so `_shared_timestamp` returns the same immutable datetime for the
# same millisecond. The compiled reader calls it; for a schema left to fastavro, the decoder's parsed copy labels
# those fields with this logical type, whose reader (fastavro's documented hook for custom logical types) is
# `_shared_timestamp`. The schema registered and the bytes are unchanged.
_SHARED_TIMESTAMP = "streamforge-shared-timestamp-millis"
_TIMESTAMPS_KEPT = 4096
_timestamps: dict[int, datetime] = {}


def _shared_timestamp(milliseconds: int, *_schemas: Any) -> datetime:
    moment = _timestamps.get(milliseconds)
    if moment is None:
        if len(_timestamps) >= _TIMESTAMPS_KEPT:
            _timestamps.clear()
        moment = _timestamps[milliseconds] = from_epoch_ms(milliseconds)
    return moment


fastavro.read.LOGICAL_READERS[f"long-{_SHARED_TIMESTAMP}"] = _shared_timestamp


def _with_shared_timestamps(schema: Any) -> Any:
    """A copy of `schema` whose timestamp-millis fields are read as shared datetimes."""
    if isinstance(schema, list):
        return [_with_shared_timestamps(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("logicalType") == "timestamp-millis" and schema.get("type") == "long":
        return {**schema, "logicalType": _SHARED_TIMESTAMP}
    return {key: _with_shared_timestamps(value) for key, value in schema.items()}


def body_reader(schema: Schema) -> BodyReader:
    """How bodies of `schema` are read: by a reader compiled for it, or by fastavro where it covers more."""
    compiled = compile_reader(schema, _shared_timestamp)
    if compiled is not None:
        return compiled
    parsed = fastavro.parse_schema(_with_shared_timestamps(schema))

    def read(value: bytes, start: int) -> Any:
        stream = io.BytesIO(value)
        stream.seek(start)
        return fastavro.schemaless_reader(stream, parsed, None)

    return read


class Decoder:
    """Decodes framed values of any schema id, fetching each unknown writer schema once."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        self._readers: dict[int, BodyReader] = {}

    async def decode_batch(self, values: Sequence[bytes]) -> BatchResult:
        """Every value of the batch: decoded records, and an error for each undecodable one. One pass: a schema id
        not seen before is fetched from the registry when first met (once per id)."""
        result = BatchResult()
        ok, errors = result.ok, result.errors
        readers, unpack = self._readers, HEADER.unpack_from
        for index, value in enumerate(values):
            try:
                magic, schema_id = unpack(value)
                if magic != MAGIC:
                    raise WireFormatError(f"magic byte is {magic}, expected {MAGIC}: not Confluent-framed Avro")
                read = readers.get(schema_id)
                if read is None:
                    read = readers[schema_id] = body_reader(await self.registry.schema_by_id(schema_id))
                ok.append((index, read(value, HEADER_SIZE)))
            except (struct.error, WireFormatError, EOFError, ValueError, IndexError, UnicodeDecodeError) as exc:
                errors.append(RecordError(index, "", self._why(value, exc)))
        return result

    def _why(self, value: bytes, exc: Exception) -> str:
        if isinstance(exc, WireFormatError):
            return str(exc)
        try:
            schema_id = schema_id_of(value)
        except WireFormatError as header_problem:
            return str(header_problem)
        return f"body does not match schema id {schema_id}: {exc!r}"


async def encoder_for(registry: SchemaRegistry, subject: str, schema: Schema) -> Encoder:
    """Register `schema` under `subject` (or find it in the cache) and build its encoder."""
    return Encoder(await registry.register(subject, schema), schema)
