"""Avro schema-resolution check: can a reader schema read data written with a writer schema?"""

from __future__ import annotations

from typing import Any

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def _collect(schema: Any, names: dict[str, Any], namespace: str = "") -> None:
    """Index every named type by full and short name, so references can be resolved."""
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, names, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed", "error"):
            space = schema.get("namespace", namespace)
            name = schema["name"]
            full = name if "." in name else f"{space}.{name}" if space else name
            names[full] = names[full.rpartition(".")[2]] = schema
            namespace = full.rpartition(".")[0]
            for child in schema.get("fields", []):
                _collect(child["type"], names, namespace)
        elif kind == "array":
            _collect(schema["items"], names, namespace)
        elif kind == "map":
            _collect(schema["values"], names, namespace)
        elif isinstance(kind, dict | list):
            _collect(kind, names, namespace)


def _short(name: str) -> str:
    return name.rpartition(".")[2]


class _Resolver:
    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader_names: dict[str, Any] = {}
        self.writer_names: dict[str, Any] = {}
        _collect(reader, self.reader_names)
        _collect(writer, self.writer_names)
        self.problems: list[str] = []
        self._seen: set[tuple[int, int]] = set()

    def _deref(self, schema: Any, names: dict[str, Any]) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return names.get(schema, names.get(_short(schema), schema))
        if isinstance(schema, dict) and not isinstance(schema.get("type"), str | type(None)):
            return self._deref(schema["type"], names)
        if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES:
            return schema["type"]
        return schema

    def check(self, reader: Any, writer: Any, path: str) -> bool:
        reader = self._deref(reader, self.reader_names)
        writer = self._deref(writer, self.writer_names)
        if isinstance(writer, list):
            return all(self.check(reader, branch, path) for branch in writer)
        if isinstance(reader, list):
            if any(self._quiet(branch, writer, path) for branch in reader):
                return True
            return self._fail(path, f"no branch of the reader union can read writer type {_kind(writer)}")
        reader_kind, writer_kind = _kind(reader), _kind(writer)
        if reader_kind in _PRIMITIVES or writer_kind in _PRIMITIVES:
            if reader_kind == writer_kind or reader_kind in _PROMOTIONS.get(writer_kind, set()):
                return True
            return self._fail(path, f"writer type {writer_kind} cannot be read as {reader_kind}")
        if reader_kind != writer_kind:
            return self._fail(path, f"writer type {writer_kind} cannot be read as {reader_kind}")
        if reader_kind in ("record", "error"):
            key = (id(reader), id(writer))
            if key in self._seen:  # recursive types: assume compatible on the second visit
                return True
            self._seen.add(key)
            return self._record(reader, writer, path)
        if reader_kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return self._fail(path, f"reader enum {reader['name']} lacks symbols {missing}")
            return True
        if reader_kind == "array":
            return self.check(reader["items"], writer["items"], f"{path}/-")
        if reader_kind == "map":
            return self.check(reader["values"], writer["values"], f"{path}/*")
        if reader_kind == "fixed" and reader.get("size") != writer.get("size"):
            return self._fail(path, f"fixed size {writer.get('size')} cannot be read as {reader.get('size')}")
        return True

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> bool:
        written = {field["name"]: field for field in writer["fields"]}
        for field in writer["fields"]:
            for alias in field.get("aliases", []):
                written.setdefault(alias, field)
        ok = True
        for field in reader["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            source = next((written[name] for name in names if name in written), None)
            where = f"{path}/{field['name']}"
            if source is None:
                if "default" not in field:
                    ok = self._fail(where, "new field has no default, so old records cannot be read")
            elif not self.check(field["type"], source["type"], where):
                ok = False
        return ok

    def _quiet(self, reader: Any, writer: Any, path: str) -> bool:
        before = len(self.problems)
        ok = self.check(reader, writer, path)
        del self.problems[before:]
        return ok

    def _fail(self, path: str, message: str) -> bool:
        self.problems.append(f"{path or '/'}: {message}")
        return False


def _kind(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, dict):
        return str(schema.get("type"))
    return "union"


def resolution_problems(reader: Any, writer: Any) -> list[str]:
    """Every reason `reader` cannot read data written with `writer`; empty when it can."""
    resolver = _Resolver(reader, writer)
    resolver.check(reader, writer, "")
    return resolver.problems


def backward_problems(new: Any, previous: Any) -> list[str]:
    """BACKWARD compatibility: consumers on the new schema must read data written with the previous."""
    return resolution_problems(new, previous)
