"""Node state tables: only changed keys reach the changelog, deletions included, and a restart gets them back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from streamforge.engine.state import StateStore, changelog_key


@dataclass
class Alarm:
    state: str
    since: datetime


def test_changed_keys_only_typed_values_back_after_a_restart() -> None:
    store = StateStore()
    alarms = store.table("alarm", Alarm)
    counts = store.table("count", int)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    alarms[("pump_1", "pressure")] = Alarm("ACTIVE", t0)
    counts[("in", 0)] = 5
    counts[("in", 0)] = 6
    changes = dict(store.changes().items())
    assert {key: None if value is None else json.loads(value) for key, value in changes.items()} == {
        json.dumps(["alarm", "pump_1", "pressure"]): {"state": "ACTIVE", "since": "2026-01-01T00:00:00Z"},
        json.dumps(["count", "in", 0]): 6,
    }
    assert len(store.changes()) == 0  # nothing changed since
    alarm = alarms[("pump_1", "pressure")]
    alarm.state = "ACKNOWLEDGED"
    alarms.touch(("pump_1", "pressure"))  # changed in place
    del counts[("in", 0)]
    changelog = {**changes, **dict(store.changes().items())}
    assert changelog[json.dumps(["count", "in", 0])] is None  # a deletion
    restarted = StateStore()
    restarted.load({key: value for key, value in changelog.items() if value is not None})
    back = restarted.table("alarm", Alarm)  # declared after loading: it still gets its keys
    assert back[("pump_1", "pressure")] == Alarm("ACKNOWLEDGED", t0)
    assert len(restarted.table("count", int)) == 0


def test_a_saved_value_that_no_longer_fits_names_its_table_key_and_field() -> None:
    store = StateStore()
    store.load({json.dumps(["alarm", "pump_1", "pressure"]): b'{"state": "ACTIVE", "since": "yesterday"}'})
    with pytest.raises(ValueError, match=r"state table 'alarm', key \['pump_1', 'pressure'\]: .* at /since: "):
        store.table("alarm", Alarm)


def test_changelog_keys_are_byte_for_byte_json_dumps() -> None:
    """Compaction keeps one value per key: a key written differently than before would keep the old value beside it
    (and a deletion would not delete it)."""
    keys: list[tuple[Any, ...]] = [
        ("pump_1", "pressure"), ("in", 0), ("telemetry.raw", -3), ("a", 2**70), (), ("Größe", "naïve \"q\" \\ /"),
        ("line\n\t\x00", "☃ emoji 😀"), ("x", True), ("x", 1.5),
    ]  # fmt: skip
    for key in keys:
        assert changelog_key("open", key) == json.dumps(["open", *key]), key


def test_a_table_is_changed_key_by_key_so_every_change_is_saved() -> None:
    store = StateStore()
    counts = store.table("count", int)
    assert counts.setdefault(("a",), 1) == 1 and counts.setdefault(("a",), 2) == 1
    counts[("b",)] = 2
    assert counts.pop(("b",)) == 2 and counts.pop(("c",), None) is None
    assert dict(store.changes().items()) == {json.dumps(["count", "a"]): b"1", json.dumps(["count", "b"]): None}
    with pytest.raises(TypeError, match="change it key by key"):
        counts.update({("d",): 4})
    assert counts.get(("a",)) == 1 and dict(counts.items()) == {("a",): 1}


def test_changes_go_to_the_changelog_as_key_and_json_with_an_empty_value_for_a_deletion() -> None:
    store = StateStore()
    counts = store.table("count", int)
    counts[("a",)], counts[("b", 7)] = 1, 2
    del counts[("b", 7)]
    changes = store.changes()
    assert len(changes) == 2
    assert sorted(changes.encoded()) == [(b'["count", "a"]', b"1"), (b'["count", "b", 7]', b"")]
