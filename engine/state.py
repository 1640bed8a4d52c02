"""Node state kept by the framework: typed tables whose changed keys go to the node's compacted changelog."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

V = TypeVar("V")
Key = tuple[str | int, ...]


class StateTable(Generic[V]):
    """One kind of state, by key: assign (`table[key] = value`) or `del` to change it; `touch(key)` after
    changing a value in place. Only changed keys are written, after Kafka acknowledged the batch they came from
    and before its input offsets are committed; the whole table is back after a restart."""

    def __init__(self, store: StateStore, name: str, value_type: type[V]) -> None:
        self.name, self._store = name, store
        self._adapter: TypeAdapter[V] = TypeAdapter(value_type)
        self._values: dict[Key, V] = {}

    def __getitem__(self, key: Key) -> V:
        return self._values[key]

    @overload
    def get(self, key: Key) -> V | None: ...
    @overload
    def get(self, key: Key, default: V) -> V: ...
    def get(self, key: Key, default: V | None = None) -> V | None:
        return self._values.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[Key]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def items(self) -> Iterator[tuple[Key, V]]:
        return iter(self._values.items())

    def __setitem__(self, key: Key, value: V) -> None:
        self._values[key] = value
        self._store.dirty.add((self.name, key))

    def __delitem__(self, key: Key) -> None:
        del self._values[key]
        self._store.dirty.add((self.name, key))

    def touch(self, key: Key) -> None:
        self._store.dirty.add((self.name, key))

    def _encode(self, key: Key) -> bytes | None:
        # Straight to JSON bytes: a checkpoint of 10,000 series built Python objects, then JSON, of every value.
        return self._adapter.dump_json(self._values[key]) if key in self._values else None

    def _load(self, key: Key, raw: bytes) -> None:
        try:
            self._values[key] = self._adapter.validate_json(raw)
        except ValidationError as unfit:
            first = unfit.errors()[0]
            where = "/" + "/".join(map(str, first["loc"]))
            raise ValueError(f"state table {self.name!r}, key {list(key)}: the saved value "
                             f"{raw[:200].decode(errors='replace')} does not fit its type at {where}: {first['msg']}; "
                             "a node type that changes its state's shape must read the old one, or its changelog "
                             "be reset") from unfit  # fmt: skip


class StateStore:
    """Every table of one node. The runtime loads the changelog into it before start() and drains `changes()`."""

    def __init__(self) -> None:
        self._tables: dict[str, StateTable[Any]] = {}
        self._pending: dict[str, list[tuple[Key, bytes]]] = {}  # loaded before its table was declared
        self.dirty: set[tuple[str, Key]] = set()

    def table(self, name: str, value_type: type[V]) -> StateTable[V]:
        """Declare (or get again) a table; what the changelog held for it is already in it."""
        existing = self._tables.get(name)
        if existing is not None:
            return existing
        table = StateTable(self, name, value_type)
        self._tables[name] = table
        for key, raw in self._pending.pop(name, []):
            table._load(key, raw)
        return table

    def load(self, changelog: Mapping[str, bytes]) -> None:
        """The changelog's last value per key (`["table", *key]` as JSON), as JSON bytes."""
        for raw_key, raw in changelog.items():
            name, *parts = json.loads(raw_key)
            key = tuple(parts)
            table = self._tables.get(name)
            if table is not None:
                table._load(key, raw)
            else:
                self._pending.setdefault(name, []).append((key, raw))

    def changes(self) -> dict[str, bytes | None]:
        """Changed keys since the last call, as changelog keys and JSON values as bytes (None: deleted)."""
        out = {json.dumps([name, *key]): self._tables[name]._encode(key) for name, key in self.dirty}
        self.dirty.clear()
        return out
