"""Node state kept by the framework: typed tables whose changed keys go to the node's compacted changelog."""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

V = TypeVar("V")
Key = tuple[str | int, ...]


class StateTable(dict[Key, V]):
    """One kind of state, by key: a dict, read at a dict's own speed (hot paths read state for every reading).
    Assign (`table[key] = value`), `del`, `pop` or `setdefault` to change it; `touch(key)` after changing a value in
    place. Only changed keys are written, after Kafka acknowledged the batch they came from and before its input
    offsets are committed; the whole table is back after a restart."""

    def __init__(self, store: StateStore, name: str, value_type: type[V], kept: bool = True) -> None:
        super().__init__()
        self.name, self._store, self.kept = name, store, kept
        self._adapter: TypeAdapter[V] = TypeAdapter(value_type)

    def __setitem__(self, key: Key, value: V) -> None:
        super().__setitem__(key, value)
        self._store.dirty.add((self.name, key))

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        self._store.dirty.add((self.name, key))

    def pop(self, key: Key, *default: Any) -> Any:
        if key in self or not self.kept:  # a journal's key is no longer held once saved: deleted all the same
            self._store.dirty.add((self.name, key))
        return super().pop(key, *default)

    def take(self) -> list[tuple[Key, V]]:
        """A journal's entries as the changelog held them at start, handed over once: it holds none of them after
        (their keys stay in the changelog until popped)."""
        entries = list(self.items())
        dict.clear(self)
        return entries

    def setdefault(self, key: Key, default: V) -> V:  # a default is required: a table holds no None
        if key not in self:
            self[key] = default
        return self[key]

    def _untracked(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"state table {self.name!r}: change it key by key (assign, del, pop), so the change is saved")

    update = clear = popitem = __ior__ = _untracked

    def touch(self, key: Key) -> None:
        self._store.dirty.add((self.name, key))

    def _encode(self, key: Key) -> bytes | None:
        # Straight to JSON bytes: a checkpoint of 10,000 series built Python objects, then JSON, of every value.
        return self._adapter.dump_json(self[key]) if key in self else None

    def _load(self, key: Key, raw: bytes) -> None:
        try:
            super().__setitem__(key, self._adapter.validate_json(raw))
        except ValidationError as unfit:
            first = unfit.errors()[0]
            where = "/" + "/".join(map(str, first["loc"]))
            raise ValueError(f"state table {self.name!r}, key {list(key)}: the saved value "
                             f"{raw[:200].decode(errors='replace')} does not fit its type at {where}: {first['msg']}; "
                             "a node type that changes its state's shape must read the old one, or its changelog "
                             "be reset") from unfit  # fmt: skip


_json_text = json.encoder.encode_basestring_ascii  # json.dumps' own string encoder (ensure_ascii)


def changelog_key(name: str, key: Key) -> str:
    """`json.dumps([name, *key])`, the changelog key of a state entry, built without the encoder's machinery: one is
    made for every changed entry of every batch. The bytes must stay exactly json.dumps', or compaction would keep
    the old key's value beside the new one."""
    parts = [_json_text(name)]
    for part in key:
        if type(part) is str:
            parts.append(_json_text(part))
        elif type(part) is int:
            parts.append(int.__repr__(part))
        else:
            return json.dumps([name, *key])
    return "[" + ", ".join(parts) + "]"


class Changes:
    """Changed state entries, encoded into one buffer as they were when taken: a checkpoint of 30,000 windows is one
    allocation (returned to the system when freed, runtime/process.py), not 60,000 keys and values alive until
    Kafka's ack, among which long-lived objects were placed and kept the freed memory from being reused (a gateway
    at 10,000 series: 186-188 MB with them, 162-167 MB with this)."""

    __slots__ = ("_blob", "_ends")

    def __init__(self) -> None:
        self._blob = bytearray()
        self._ends = array("q")  # per entry: where its key ends, then where its value ends (no value: deleted)

    def add(self, key: bytes, value: bytes | None) -> None:
        self._blob += key
        self._ends.append(len(self._blob))
        if value is not None:
            self._blob += value
        self._ends.append(len(self._blob))

    def __len__(self) -> int:
        return len(self._ends) // 2

    def encoded(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) as written to the changelog: an empty value deletes its key (JSON is never empty)."""
        view, ends, start = memoryview(self._blob), self._ends, 0
        for index in range(0, len(ends), 2):
            key_end, value_end = ends[index], ends[index + 1]
            yield view[start:key_end].tobytes(), view[key_end:value_end].tobytes()
            start = value_end

    def items(self) -> Iterator[tuple[str, bytes | None]]:
        """Changelog keys and JSON values (None: deleted)."""
        for key, value in self.encoded():
            yield key.decode(), value or None


class StateStore:
    """Every table of one node. The runtime loads the changelog into it before start() and drains `changes()`."""

    def __init__(self) -> None:
        self._tables: dict[str, StateTable[Any]] = {}
        self._pending: dict[str, list[tuple[Key, bytes]]] = {}  # loaded before its table was declared
        self.dirty: set[tuple[str, Key]] = set()

    def table(self, name: str, value_type: type[V], kept: bool = True) -> StateTable[V]:
        """Declare (or get again) a table; what the changelog held for it is already in it.

        `kept=False`: a journal, for a node that keeps its state in a form of its own. A value assigned is held only
        until the next save encodes it; `pop` writes a deletion whether or not the key is held; `take()` hands over
        what the changelog held at start."""
        existing = self._tables.get(name)
        if existing is not None:
            return existing
        table = StateTable(self, name, value_type, kept)
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

    def changes(self) -> Changes:
        """Changed keys since the last call, encoded as they are now."""
        out = Changes()
        tables = self._tables
        for name, key in self.dirty:
            table = tables[name]
            out.add(changelog_key(name, key).encode(), table._encode(key))
            if not table.kept:
                dict.pop(table, key, None)
        for table in tables.values():
            if not table.kept and not table:  # emptied, a dict keeps its largest table (50,000 windows) till cleared
                dict.clear(table)
        self.dirty.clear()
        return out
