"""Secret references: plaintext is moved out of documents, references resolve, missing ones are located."""

from __future__ import annotations

from typing import Any

import pytest

from streamforge.engine.node_types import load_node_types
from streamforge.engine.problems import FlowInvalid
from streamforge.engine.secrets import externalize, placeholders, resolve

DOC: dict[str, Any] = {
    "id": "line",
    "nodes": [
        {"id": "db", "type": "postgres", "config": {"dsn": "postgresql://u:hunter2@db/x", "table_prefix": "a_"}},
        {"id": "val", "type": "validator", "config": {}},
    ],
    "edges": [],
}


def test_plaintext_in_secret_fields_moves_to_the_store() -> None:
    kept: dict[str, str] = {}
    stored = externalize(DOC, load_node_types(False), kept.__setitem__)
    assert kept == {"line.db.dsn": "postgresql://u:hunter2@db/x"}
    assert stored["nodes"][0]["config"] == {"dsn": {"$secret": "line.db.dsn"}, "table_prefix": "a_"}
    assert "hunter2" not in repr(stored) and DOC["nodes"][0]["config"]["dsn"].endswith("/x")  # input untouched
    assert resolve(stored, kept.get)["nodes"][0]["config"]["dsn"] == "postgresql://u:hunter2@db/x"
    assert placeholders(stored)["nodes"][0]["config"]["dsn"] == "<secret line.db.dsn>"


def test_a_missing_secret_is_located() -> None:
    stored = externalize(DOC, load_node_types(False), lambda name, value: None)
    with pytest.raises(FlowInvalid) as caught:
        resolve(stored, lambda name: None)
    (problem,) = caught.value.problems
    assert (problem.code, problem.pointer, problem.node_id) == ("unknown_secret", "/nodes/0/config/dsn", "db")


def test_secrets_nested_in_a_config_move_to_the_store_too() -> None:
    router = {"destinations": {"oncall": {"kind": "pagerduty", "routing_key": "R0UT1NG"},
                               "chat": {"kind": "slack", "url": "https://hooks.example/T0/B0/s3cr3t"},
                               "mail": {"kind": "email", "host": "smtp", "sender": "a@b.c", "to": ["d@e.f"],
                                        "password": "mailpass"}},
              "routes": [{"severities": ["CRITICAL"], "destinations": ["oncall"]}]}  # fmt: skip
    document = {"id": "line", "nodes": [{"id": "router", "type": "alert_router", "config": router}], "edges": []}
    kept: dict[str, str] = {}
    stored = externalize(document, load_node_types(False), kept.__setitem__)
    assert kept == {"line.router.destinations.oncall.routing_key": "R0UT1NG",
                    "line.router.destinations.chat.url": "https://hooks.example/T0/B0/s3cr3t",
                    "line.router.destinations.mail.password": "mailpass"}  # fmt: skip
    assert not any(secret in repr(stored) for secret in ("R0UT1NG", "s3cr3t", "mailpass"))
    assert stored["nodes"][0]["config"]["destinations"]["mail"]["host"] == "smtp"  # the rest as it was
    assert resolve(stored, kept.get)["nodes"][0]["config"] == router
