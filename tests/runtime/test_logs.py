"""The log ring: JSON lines of several processes, queried by level, component, flow, node, time and text, and
kept within its size and age bounds."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError

from streamforge.runtime.logs import LogQuery, LogRing, configure_logging


def write(path: Path, *lines: dict[str, object]) -> None:
    with path.open("a") as file:
        for line in lines:
            file.write(json.dumps(line) + "\n")


def test_a_query_filters_across_every_processs_file(tmp_path: Path) -> None:
    write(
        tmp_path / "gateway.jsonl",
        {"timestamp": "2026-12-01T10:00:00+00:00", "level": "INFO", "component": "gateway", "message": "deployed"},
        {"timestamp": "2026-12-01T10:00:03+00:00", "level": "ERROR", "component": "gateway", "message": "kafka away"},
    )
    write(tmp_path / "worker-line.press.jsonl",
          {"timestamp": "2026-12-01T10:00:01+00:00", "level": "WARNING", "component": "worker:press", "flow": "line",
           "node": "press", "message": "node status", "error": "PeerUnavailable: 10.0.0.7:502 refused"},
          {"timestamp": "2026-12-01T10:00:02+00:00", "level": "INFO", "component": "worker:press", "flow": "line",
           "node": "press", "message": "node status"})  # fmt: skip
    (tmp_path / "worker-line.press.jsonl").open("a").write("not json\n")  # a torn line is skipped, not fatal
    ring = LogRing(tmp_path)
    everything = ring.query(LogQuery())
    assert [line["message"] for line in everything] == ["deployed", "node status", "node status", "kafka away"]
    warnings = ring.query(LogQuery.parse({"level": "warning"}))
    assert [line["level"] for line in warnings] == ["WARNING", "ERROR"]
    press = ring.query(LogQuery.parse({"node": "press", "q": "REFUSED"}))
    assert len(press) == 1 and press[0]["component"] == "worker:press"
    since = ring.query(LogQuery.parse({"since": "2026-12-01T10:00:01+00:00"}))
    assert [line["timestamp"][17:19] for line in since] == ["02", "03"]
    assert len(ring.query(LogQuery.parse({"limit": "1"}))) == 1
    with pytest.raises(ValueError, match="level 'LOUD' is not one of DEBUG, INFO"):
        LogQuery.parse({"level": "loud"})
    with pytest.raises(ValueError, match="is not an ISO 8601 time"):
        LogQuery.parse({"since": "yesterday"})


def test_the_ring_drops_old_and_surplus_rotated_files_never_a_live_one(tmp_path: Path) -> None:
    for name in ("gateway.jsonl", "gateway.jsonl.1", "gateway.jsonl.2", "worker-a.b.jsonl"):
        (tmp_path / name).write_bytes(b"x" * 1000)
    old = tmp_path / "worker-a.b.jsonl.1"
    old.write_bytes(b"x" * 10)
    os.utime(old, (time.time() - 8 * 86400, time.time() - 8 * 86400))
    os.utime(tmp_path / "gateway.jsonl.2", (time.time() - 60, time.time() - 60))
    assert LogRing(tmp_path, max_bytes=3500, max_age_s=7 * 86400).prune() == 2  # the 8-day-old one, the oldest .2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.jsonl", "gateway.jsonl.1", "worker-a.b.jsonl"]


def test_configured_processes_write_their_json_lines_into_the_ring(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("STREAMFORGE_LOG_DIR", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("worker:press", log_dir=tmp_path, file_stem="worker-line.press")
        logging.getLogger("streamforge.node").warning("read failed", extra={"flow": "line", "node": "press"})
        for handler in root.handlers:
            handler.flush()
        assert os.environ["STREAMFORGE_LOG_DIR"] == str(tmp_path)  # the worker processes it starts inherit it
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    [line] = LogRing(tmp_path).query(LogQuery.parse({"node": "press"}))
    assert (line["component"], line["level"], line["message"], line["flow"]) == ("worker:press", "WARNING",
                                                                                  "read failed", "line")  # fmt: skip


def test_a_retried_coordinator_lookup_is_a_warning_and_a_lasting_failure_stays_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every consumer group's first lookup on a fresh broker fails and is retried: not an ERROR for operators."""
    monkeypatch.delenv("STREAMFORGE_LOG_DIR", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    coordinator = logging.getLogger("aiokafka.consumer.group_coordinator")  # the logger aiokafka writes these to
    try:
        configure_logging("gateway", log_dir=tmp_path)
        coordinator.error("Group Coordinator Request failed: %s", GroupCoordinatorNotAvailableError())
        coordinator.error("Attempt to join group failed due to fatal error: %s", GroupAuthorizationFailedError())
        for handler in root.handlers:
            handler.flush()
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = LogRing(tmp_path).query(LogQuery.parse({"level": "DEBUG", "component": "gateway"}))
    levels = {line["message"].split(":")[0]: line["level"] for line in lines}
    assert levels == {"Group Coordinator Request failed": "WARNING",
                      "Attempt to join group failed due to fatal error": "ERROR"}  # fmt: skip
