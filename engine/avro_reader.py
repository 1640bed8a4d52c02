"""Avro bodies read by a function compiled once per writer schema: straight-line code, no call per field."""

# Why: fastavro's reader makes a Python call per field, and per byte of each varint, through a file object: ~5.3 µs
# for a telemetry record, a third of the validator's CPU (issue #15). The reader compiled from the same schema
# takes ~2.8 µs. It returns what fastavro returns; a schema with a type it does not cover (a recursive type, a
# logical type other than timestamp-millis) is read by fastavro instead: `compile_reader` says so with None.

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import datetime
from typing import Any

BodyReader = Callable[[bytes, int], Any]  # (value, where its body starts) -> the record

_FLOAT = struct.Struct("<f").unpack_from
_DOUBLE = struct.Struct("<d").unpack_from
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# fastavro turns these into Python objects of their own (Decimal, UUID, date, time...): left to it.
_LOGICAL_LEFT_TO_FASTAVRO = frozenset({
    "decimal", "uuid", "date", "time-millis", "time-micros", "timestamp-micros", "local-timestamp-millis",
    "local-timestamp-micros", "timestamp-nanos", "local-timestamp-nanos",
})  # fmt: skip


class _NotCovered(Exception):
    """The schema uses something this compiler leaves to fastavro."""


def compile_reader(schema: Any, timestamp_millis: Callable[[int], datetime]) -> BodyReader | None:
    """A function reading one body of `schema` from a value at a given offset; None if fastavro must read it.

    A body that ends early raises IndexError, EOFError or struct.error; invalid UTF-8 UnicodeDecodeError; a
    negative length, or an enum or union index out of range, ValueError."""
    code = _Code(timestamp_millis)
    try:
        code.read(schema, "record", 1, "")
    except _NotCovered:
        return None
    source = "\n".join([
        "def read(buf, pos):",
        *code.lines,
        "    if pos > len(buf):",
        "        raise EOFError(f'the body ends {pos - len(buf)} bytes early')",
        "    return record",
    ])  # fmt: skip
    namespace: dict[str, Any] = dict(code.constants)
    try:
        exec(compile(source, f"<avro reader {schema.get('name', 'value') if isinstance(schema, dict) else ''}>",
                     "exec"), namespace)  # fmt: skip
    except (SyntaxError, RecursionError):  # nested past Python's block limit: fastavro has none
        return None
    reader: BodyReader = namespace["read"]
    return reader


class _Code:
    """Source lines that leave each decoded value in a local variable, and the constants they name."""

    def __init__(self, timestamp_millis: Callable[[int], datetime]) -> None:
        self.lines: list[str] = []
        self.constants: dict[str, Any] = {"FLOAT": _FLOAT, "DOUBLE": _DOUBLE, "TIMESTAMP": timestamp_millis}
        self.named: dict[str, Any] = {}
        self.building: set[str] = set()
        self._count = 0

    def var(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def const(self, value: Any) -> str:
        name = f"K{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    def long(self, target: str, indent: int, zigzag: bool = True) -> None:
        """A zigzag varint: one byte on the fast path. Without `zigzag`, left encoded (n for n >= 0 is 2n)."""
        self.emit(indent,
                  f"{target} = buf[pos]",
                  "pos += 1",
                  f"if {target} > 127:",
                  f"    {target} &= 127",
                  "    shift = 7",
                  "    while True:",
                  "        b = buf[pos]",
                  "        pos += 1",
                  f"        {target} |= (b & 127) << shift",
                  "        if b < 128:",
                  "            break",
                  "        shift += 7")  # fmt: skip
        if zigzag:
            self.emit(indent, f"{target} = ({target} >> 1) ^ -({target} & 1)")

    def count(self, target: str, indent: int, what: str) -> None:
        """A length or an index, which cannot be negative."""
        self.long(target, indent, zigzag=False)
        self.emit(indent, f"if {target} & 1:", f"    raise ValueError(f'negative {what}')", f"{target} >>= 1")

    def read(self, schema: Any, target: str, indent: int, namespace: str) -> None:
        """Lines that read one value of `schema` into the variable `target`."""
        if isinstance(schema, list):
            self.union(schema, target, indent, namespace)
            return
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                self.primitive(schema, target, indent)
                return
            self.reference(schema, target, indent, namespace)
            return
        if not isinstance(schema, dict):
            raise _NotCovered(f"schema node {schema!r}")
        kind = schema.get("type")
        logical = schema.get("logicalType")
        if logical in _LOGICAL_LEFT_TO_FASTAVRO or (logical == "timestamp-millis" and kind != "long"):
            raise _NotCovered(f"logical type {logical}")
        if logical == "timestamp-millis":
            self.long(target, indent)
            self.emit(indent, f"{target} = TIMESTAMP({target})")
        elif kind in ("record", "error", "enum", "fixed"):
            self.named_type(schema, target, indent, namespace)
        elif kind == "array":
            self.repeated(schema["items"], None, target, indent, namespace)
        elif kind == "map":
            self.repeated(schema["values"], "string", target, indent, namespace)
        else:
            self.read(kind, target, indent, namespace)  # {"type": "long"} and unknown logical types: the base type

    def primitive(self, kind: str, target: str, indent: int) -> None:
        if kind == "null":
            self.emit(indent, f"{target} = None")
        elif kind == "boolean":
            self.emit(indent, f"{target} = buf[pos] == 1", "pos += 1")
        elif kind in ("int", "long"):
            self.long(target, indent)
        elif kind == "float":
            self.emit(indent, f"{target} = FLOAT(buf, pos)[0]", "pos += 4")
        elif kind == "double":
            self.emit(indent, f"{target} = DOUBLE(buf, pos)[0]", "pos += 8")
        else:
            self.count(target, indent, f"{kind} length")
            decode = ".decode()" if kind == "string" else ""
            end = self.var("end")
            self.emit(indent, f"{end} = pos + {target}", f"{target} = buf[pos:{end}]{decode}", f"pos = {end}")

    def named_type(self, schema: dict[str, Any], target: str, indent: int, namespace: str) -> None:
        name = _full_name(schema["name"], schema.get("namespace", namespace))
        inner = name.rpartition(".")[0]
        self.named[name] = schema
        kind = schema["type"]
        if kind == "enum":
            symbols = self.const(tuple(schema["symbols"]))
            self.count(target, indent, f"index of enum {name}")
            self.emit(indent, f"{target} = {symbols}[{target}]")
        elif kind == "fixed":
            size = int(schema["size"])
            self.emit(indent, f"{target} = buf[pos:pos + {size}]", f"pos += {size}")
        else:
            self.building.add(name)
            fields = []
            for field in schema["fields"]:
                value = self.var("f")
                self.read(field["type"], value, indent, inner)
                fields.append(f"{field['name']!r}: {value}")
            self.building.discard(name)
            self.emit(indent, f"{target} = {{{', '.join(fields)}}}")

    def reference(self, name: str, target: str, indent: int, namespace: str) -> None:
        full = name if "." in name else _full_name(name, namespace)
        if full not in self.named and name in self.named:
            full = name
        if full in self.building or full not in self.named:
            raise _NotCovered(f"recursive or unknown type {name}")
        self.named_type(self.named[full], target, indent, full.rpartition(".")[0])

    def union(self, branches: list[Any], target: str, indent: int, namespace: str) -> None:
        index = self.var("u")
        self.long(index, indent, zigzag=False)  # compared encoded: branch n is 2n
        for number, branch in enumerate(branches):
            self.emit(indent, f"{'if' if number == 0 else 'elif'} {index} == {2 * number}:")
            self.read(branch, target, indent + 1, namespace)
        decoded = f"({index} >> 1) ^ -({index} & 1)"
        self.emit(indent, "else:", f"    raise ValueError(f'union index {{{decoded}}} of {len(branches)} branches')")

    def repeated(self, item: Any, key: str | None, target: str, indent: int, namespace: str) -> None:
        """An array (key None) or a map: blocks of items, a negative count followed by the block's size."""
        count, value = self.var("n"), self.var("v")
        self.emit(indent, f"{target} = {{}}" if key else f"{target} = []")
        self.long(count, indent)
        self.emit(indent, f"while {count}:", f"    if {count} < 0:", f"        {count} = -{count}")
        self.long("skipped", indent + 2)
        self.emit(indent + 1, f"for _ in range({count}):")
        if key:
            name = self.var("k")
            self.primitive(key, name, indent + 2)
            self.read(item, value, indent + 2, namespace)
            self.emit(indent + 2, f"{target}[{name}] = {value}")
        else:
            self.read(item, value, indent + 2, namespace)
            self.emit(indent + 2, f"{target}.append({value})")
        self.long(count, indent + 1)


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"
