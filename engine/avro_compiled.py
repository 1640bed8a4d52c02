"""Avro bodies read and written by functions compiled once per schema: straight-line code, no call per field."""

# Why: fastavro makes a Python call per field, and its reader per byte of each varint, through a file object: a
# telemetry record takes ~5.4 µs to read and ~6.4 µs to write, a third of the validator's CPU (issue #15). The
# functions compiled from the same schema take ~3.2 and ~2.8 µs. They read what fastavro reads and write the bytes
# it writes (tests compare them on every type). A schema with something they do not cover (a recursive type, a
# logical type other than timestamp-millis, a union fastavro resolves by trying records) is left to fastavro:
# `compile_reader` and `compile_writer` say so with None.

from __future__ import annotations

import struct
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any

BodyReader = Callable[[bytes, int], Any]  # (value, where its body starts) -> the record
BodyWriter = Callable[[Any, bytearray], None]  # (record, the value so far) appends the body

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
# fastavro turns these into Python objects of their own (Decimal, UUID, date, time...): left to it.
_LOGICAL_LEFT_TO_FASTAVRO = frozenset({
    "decimal", "uuid", "date", "time-millis", "time-micros", "timestamp-micros", "local-timestamp-millis",
    "local-timestamp-micros", "timestamp-nanos", "local-timestamp-nanos",
})  # fmt: skip
_RANGES = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}


class _NotCovered(Exception):
    """The schema uses something these compilers leave to fastavro."""


def compile_reader(schema: Any, timestamp_millis: Callable[[int], datetime]) -> BodyReader | None:
    """A function reading one body of `schema` from a value at a given offset; None if fastavro must read it.

    A body that ends early raises IndexError, EOFError or struct.error; invalid UTF-8 UnicodeDecodeError; a
    negative length, or an enum or union index out of range, ValueError."""
    code = _ReaderCode({"FLOAT": struct.Struct("<f").unpack_from, "DOUBLE": struct.Struct("<d").unpack_from,
                        "TIMESTAMP": timestamp_millis, "INTERN": sys.intern})  # fmt: skip
    tail = ["if pos > len(buf):", "    raise EOFError(f'the body ends {pos - len(buf)} bytes early')", "return value"]
    reader: BodyReader | None = code.function("read(buf, pos)", schema, tail)
    return reader


def compile_writer(schema: Any, timestamp_millis: Callable[[Any, Any], int]) -> BodyWriter | None:
    """A function appending the body of a record of `schema` to a bytearray; None if fastavro must write it.

    `timestamp_millis(value, schema)` turns a timestamp field's value into milliseconds (fastavro's own
    preparation, so both accept the same values). A value of the wrong type raises TypeError, AttributeError,
    KeyError, ValueError or struct.error; an integer out of its type's range OverflowError: the caller explains
    which field (the bytes appended by then are not a body)."""
    code = _WriterCode({"FLOAT": struct.Struct("<f").pack, "DOUBLE": struct.Struct("<d").pack,
                        "TIMESTAMP": timestamp_millis})  # fmt: skip
    writer: BodyWriter | None = code.function("write(value, out)", schema, [])
    return writer


class _Code(ABC):
    """Source lines for one schema, each value in a local variable, and the constants the lines name.

    Walks the schema the same way for reading and writing; the subclass says what each type's lines are."""

    def __init__(self, constants: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.constants = dict(constants)
        self.named: dict[str, Any] = {}
        self.building: set[str] = set()
        self._count = 0

    def function(self, signature: str, schema: Any, tail: list[str]) -> Any:
        """The compiled function, or None where fastavro must do it."""
        function = signature.partition("(")[0]
        name = schema.get("name", "value") if isinstance(schema, dict) else "value"
        namespace: dict[str, Any] = {}
        try:
            self.value(schema, "value", 1, "")
            source = "\n".join([f"def {signature}:", *self.lines, *("    " + line for line in tail)])
            namespace.update(self.constants)  # all of them, now that every type's lines are in
            exec(compile(source, f"<avro {function} of {name}>", "exec"), namespace)
        except (_NotCovered, SyntaxError, RecursionError):  # nested past Python's block limits: fastavro has none
            return None
        return namespace[function]

    def var(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def const(self, value: Any) -> str:
        name = f"K{len(self.constants)}"
        self.constants[name] = value
        return name

    def emit(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    def value(self, schema: Any, var: str, indent: int, namespace: str) -> None:
        """Lines for one value of `schema` in the variable `var`."""
        if isinstance(schema, list):
            self.union(schema, var, indent, namespace)
        elif isinstance(schema, str):
            if schema in _PRIMITIVES:
                self.primitive(schema, var, indent)
            else:
                self.reference(schema, var, indent, namespace)
        elif not isinstance(schema, dict):
            raise _NotCovered(f"schema node {schema!r}")
        elif schema.get("logicalType") == "timestamp-millis" and schema.get("type") == "long":
            self.timestamp(var, indent)
        elif schema.get("logicalType") in _LOGICAL_LEFT_TO_FASTAVRO or schema.get("logicalType") == "timestamp-millis":
            raise _NotCovered(f"logical type {schema['logicalType']}")
        elif schema.get("type") in ("record", "error", "enum", "fixed"):
            self.named_type(schema, var, indent, namespace)
        elif schema.get("type") == "array":
            self.repeated(schema["items"], False, var, indent, namespace)
        elif schema.get("type") == "map":
            self.repeated(schema["values"], True, var, indent, namespace)
        else:
            self.value(schema.get("type"), var, indent, namespace)  # {"type": "long"}, unknown logical types

    def named_type(self, schema: dict[str, Any], var: str, indent: int, namespace: str) -> None:
        name = _full_name(schema["name"], schema.get("namespace", namespace))
        self.named[name] = schema
        if schema["type"] == "enum":
            self.enum(tuple(schema["symbols"]), name, var, indent)
        elif schema["type"] == "fixed":
            self.fixed(int(schema["size"]), var, indent)
        else:
            self.building.add(name)
            self.record(schema["fields"], var, indent, name.rpartition(".")[0])
            self.building.discard(name)

    def reference(self, name: str, var: str, indent: int, namespace: str) -> None:
        full = name if "." in name else _full_name(name, namespace)
        if full not in self.named and name in self.named:
            full = name
        if full in self.building or full not in self.named:
            raise _NotCovered(f"recursive or unknown type {name}")
        self.named_type(self.named[full], var, indent, full.rpartition(".")[0])

    # Each type's lines, for one value of it in `var`: reading leaves it there, writing takes it from there.
    @abstractmethod
    def primitive(self, kind: str, var: str, indent: int) -> None: ...

    @abstractmethod
    def timestamp(self, var: str, indent: int) -> None: ...

    @abstractmethod
    def enum(self, symbols: tuple[str, ...], name: str, var: str, indent: int) -> None: ...

    @abstractmethod
    def fixed(self, size: int, var: str, indent: int) -> None: ...

    @abstractmethod
    def record(self, fields: list[dict[str, Any]], var: str, indent: int, namespace: str) -> None: ...

    @abstractmethod
    def union(self, branches: list[Any], var: str, indent: int, namespace: str) -> None: ...

    @abstractmethod
    def repeated(self, item: Any, is_map: bool, var: str, indent: int, namespace: str) -> None: ...


class _ReaderCode(_Code):
    """Lines that read a body from `buf` at `pos` into local variables."""

    def long(self, var: str, indent: int, zigzag: bool = True) -> None:
        """A zigzag varint: one byte on the fast path. Without `zigzag`, left encoded (n for n >= 0 is 2n)."""
        self.emit(indent,
                  f"{var} = buf[pos]",
                  "pos += 1",
                  f"if {var} > 127:",
                  f"    {var} &= 127",
                  "    shift = 7",
                  "    while True:",
                  "        b = buf[pos]",
                  "        pos += 1",
                  f"        {var} |= (b & 127) << shift",
                  "        if b < 128:",
                  "            break",
                  "        shift += 7")  # fmt: skip
        if zigzag:
            self.emit(indent, f"{var} = ({var} >> 1) ^ -({var} & 1)")

    def count(self, var: str, indent: int, what: str) -> None:
        """A length or an index, which cannot be negative. (`what` may hold a schema's names: a constant, never
        source, so a schema from the registry cannot put code in the reader.)"""
        self.long(var, indent, zigzag=False)
        self.emit(indent, f"if {var} & 1:", f"    raise ValueError({self.const(f'negative {what}')})", f"{var} >>= 1")

    def primitive(self, kind: str, var: str, indent: int) -> None:
        if kind == "null":
            self.emit(indent, f"{var} = None")
        elif kind == "boolean":
            self.emit(indent, f"{var} = buf[pos] == 1", "pos += 1")
        elif kind in ("int", "long"):
            self.long(var, indent)
        elif kind == "float":
            self.emit(indent, f"{var} = FLOAT(buf, pos)[0]", "pos += 4")
        elif kind == "double":
            self.emit(indent, f"{var} = DOUBLE(buf, pos)[0]", "pos += 8")
        else:
            self.count(var, indent, f"{kind} length")
            end = self.var("end")
            # A string interned: names of devices, parameters and units recur in every reading, and a reading held in
            # a batch or by a node's state then shares them instead of carrying copies of its own (~55 B each).
            value = f"INTERN(buf[pos:{end}].decode())" if kind == "string" else f"buf[pos:{end}]"
            self.emit(indent, f"{end} = pos + {var}", f"{var} = {value}", f"pos = {end}")

    def timestamp(self, var: str, indent: int) -> None:
        self.long(var, indent)
        self.emit(indent, f"{var} = TIMESTAMP({var})")

    def enum(self, symbols: tuple[str, ...], name: str, var: str, indent: int) -> None:
        self.count(var, indent, f"index of enum {name}")
        self.emit(indent, f"{var} = {self.const(symbols)}[{var}]")

    def fixed(self, size: int, var: str, indent: int) -> None:
        self.emit(indent, f"{var} = buf[pos:pos + {size}]", f"pos += {size}")

    def record(self, fields: list[dict[str, Any]], var: str, indent: int, namespace: str) -> None:
        items = []
        for field in fields:
            value = self.var("f")
            self.value(field["type"], value, indent, namespace)
            items.append(f"{field['name']!r}: {value}")
        self.emit(indent, f"{var} = {{{', '.join(items)}}}")

    def union(self, branches: list[Any], var: str, indent: int, namespace: str) -> None:
        index = self.var("u")
        self.long(index, indent, zigzag=False)  # compared encoded: branch n is 2n
        for number, branch in enumerate(branches):
            self.emit(indent, f"{'if' if number == 0 else 'elif'} {index} == {2 * number}:")
            self.value(branch, var, indent + 1, namespace)
        decoded = f"({index} >> 1) ^ -({index} & 1)"
        self.emit(indent, "else:", f"    raise ValueError(f'union index {{{decoded}}} of {len(branches)} branches')")

    def repeated(self, item: Any, is_map: bool, var: str, indent: int, namespace: str) -> None:
        """Blocks of items, each a count (negative: followed by the block's size in bytes); 0 ends them."""
        count, value = self.var("n"), self.var("v")
        self.emit(indent, f"{var} = {{}}" if is_map else f"{var} = []")
        self.long(count, indent)
        self.emit(indent, f"while {count}:", f"    if {count} < 0:", f"        {count} = -{count}")
        self.long("skipped", indent + 2)
        self.emit(indent + 1, f"for _ in range({count}):")
        if is_map:
            key = self.var("k")
            self.primitive("string", key, indent + 2)
            self.value(item, value, indent + 2, namespace)
            self.emit(indent + 2, f"{var}[{key}] = {value}")
        else:
            self.value(item, value, indent + 2, namespace)
            self.emit(indent + 2, f"{var}.append({value})")
        self.long(count, indent + 1)


# How fastavro picks a union's branch for a value: the first branch the value validates against (fastavro's
# `validate`), for the branch types it checks by Python type alone. A union with a record, array or map beside
# another non-null branch is resolved by trying whole values, and one with float and double prefers double:
# left to fastavro.
_BRANCH_TESTS = {
    "null": "{v} is None",
    "boolean": "isinstance({v}, bool)",
    **{
        kind: f"isinstance({{v}}, int) and not isinstance({{v}}, bool) and {low} <= {{v}} <= {high}"
        for kind, (low, high) in _RANGES.items()
    },
    "float": "isinstance({v}, (int, float)) and not isinstance({v}, bool)",
    "double": "isinstance({v}, (int, float)) and not isinstance({v}, bool)",
    "string": "isinstance({v}, str)",
    "bytes": "isinstance({v}, (bytes, bytearray))",
}


class _WriterCode(_Code):
    """Lines that append the body of the record in `value` to `out`."""

    def long(self, var: str, indent: int, kind: str = "long") -> None:
        """A zigzag varint, after checking the type's range (fastavro's writer checks only a long's: it wrote
        2**40 as an "int", which no reader takes back as one)."""
        low, high = _RANGES[kind]
        encoded = self.var("z")
        self.emit(indent,
                  f"if not {low} <= {var} <= {high}:",
                  f"    raise OverflowError(f'{{{var}}} is out of range for an Avro {kind}')",
                  f"{encoded} = ({var} << 1) ^ ({var} >> 63)")  # fmt: skip
        self.unsigned(encoded, indent)

    def unsigned(self, var: str, indent: int) -> None:
        """A varint of a non-negative number (a count, a length, an index: 2n for n)."""
        self.emit(indent,
                  f"while {var} > 127:",
                  f"    out.append(({var} & 127) | 128)",
                  f"    {var} >>= 7",
                  f"out.append({var})")  # fmt: skip

    def primitive(self, kind: str, var: str, indent: int) -> None:
        if kind == "null":
            self.emit(indent, "pass")  # nothing to write, and fastavro checks nothing
        elif kind == "boolean":
            self.emit(indent, f"out.append(1 if {var} else 0)")
        elif kind in ("int", "long"):
            self.long(var, indent, kind)
        elif kind in ("float", "double"):
            self.emit(indent, f"out += {kind.upper()}({var})")
        else:
            data, size = self.var("s"), self.var("n")
            self.emit(indent, f"{data} = {var}.encode()" if kind == "string" else f"{data} = {var}",
                      f"{size} = len({data}) << 1")  # fmt: skip
            self.unsigned(size, indent)
            self.emit(indent, f"out += {data}")

    def timestamp(self, var: str, indent: int) -> None:
        milliseconds = self.var("t")
        self.emit(indent, f"{milliseconds} = TIMESTAMP({var}, None)")
        self.long(milliseconds, indent)

    def enum(self, symbols: tuple[str, ...], name: str, var: str, indent: int) -> None:
        encoded = self.const({symbol: 2 * index for index, symbol in enumerate(symbols)})
        if len(symbols) <= 64:  # every index fits one byte
            self.emit(indent, f"out.append({encoded}[{var}])")
            return
        index = self.var("i")
        self.emit(indent, f"{index} = {encoded}[{var}]")
        self.unsigned(index, indent)

    def fixed(self, size: int, var: str, indent: int) -> None:
        self.emit(indent, f"if len({var}) != {size}:", f"    raise ValueError(f'{{len({var})}} bytes, not {size}')",
                  f"out += {var}")  # fmt: skip

    def record(self, fields: list[dict[str, Any]], var: str, indent: int, namespace: str) -> None:
        for field in fields:
            value = self.var("f")
            default = self.const(field["default"]) if "default" in field else "None"
            self.emit(indent, f"{value} = {var}.get({field['name']!r}, {default})")
            self.value(field["type"], value, indent, namespace)

    def union(self, branches: list[Any], var: str, indent: int, namespace: str) -> None:
        kinds = [branch if isinstance(branch, str) else None for branch in branches]
        if len(branches) == 2 and "null" in kinds:
            null, other = kinds.index("null"), 1 - kinds.index("null")
            self.emit(
                indent, f"if {var} is None:", f"    out.append({2 * null})", "else:", f"    out.append({2 * other})"
            )
            self.value(branches[other], var, indent + 1, namespace)
            return
        if any(kind not in _BRANCH_TESTS for kind in kinds) or {"float", "double"} <= set(kinds):
            raise _NotCovered("a union fastavro resolves by trying whole values, or preferring double to float")
        for number, kind in enumerate(kinds):
            self.emit(indent, f"{'if' if number == 0 else 'elif'} {_BRANCH_TESTS[str(kind)].format(v=var)}:",
                      f"    out.append({2 * number})")  # fmt: skip
            self.primitive(str(kind), var, indent + 1)
        self.emit(indent, "else:", f"    raise TypeError(f'{{{var}!r}} fits none of {', '.join(map(str, kinds))}')")

    def repeated(self, item: Any, is_map: bool, var: str, indent: int, namespace: str) -> None:
        """One block of all the items, then 0 (as fastavro writes them)."""
        count, key, value = self.var("n"), self.var("k"), self.var("v")
        self.emit(indent, f"if {var}:", f"    {count} = len({var}) << 1")
        self.unsigned(count, indent + 1)
        if is_map:
            self.emit(indent + 1, f"for {key}, {value} in {var}.items():")
            self.primitive("string", key, indent + 2)
        else:
            self.emit(indent + 1, f"for {value} in {var}:")
        self.value(item, value, indent + 2, namespace)
        self.emit(indent, "out.append(0)")


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"
