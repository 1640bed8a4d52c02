"""Secrets in flows: configs hold `{"$secret": "name"}` references; values live apart, encrypted at rest."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from pydantic import SecretStr

from streamforge.engine.node_types import NodeTypes
from streamforge.engine.problems import FlowInvalid, Problem, pointer_of

SECRET_KEY = "$secret"


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SECRET_KEY} and isinstance(value[SECRET_KEY], str)


def secret_fields(node_types: NodeTypes, type_name: str) -> list[str]:
    """Top-level config fields a node type declares as SecretStr (the editor masks them too)."""
    cls = node_types.get(type_name)
    if cls is None:
        return []
    return [
        name for name, field in cls.Config.model_fields.items() if field.annotation in (SecretStr, SecretStr | None)
    ]


def externalize(document: dict[str, Any], node_types: NodeTypes, keep: Callable[[str, str], None]) -> dict[str, Any]:
    """A copy where every plaintext value of a secret field is handed to `keep(name, value)` and replaced by a
    reference named `<flow>.<node>.<field>`; so no stored or exported document ever holds a secret value."""
    result = copy.deepcopy(document)
    for node in result.get("nodes", []):
        config = node.get("config", {})
        for field in secret_fields(node_types, node.get("type", "")):
            value = config.get(field)
            if isinstance(value, str) and value:
                name = f"{result['id']}.{node['id']}.{field}"
                keep(name, value)
                config[field] = {SECRET_KEY: name}
    return result


def resolve(document: dict[str, Any], lookup: Callable[[str], str | None]) -> dict[str, Any]:
    """A copy with every reference replaced by its value; FlowInvalid names each missing secret and where."""
    result = copy.deepcopy(document)
    problems: list[Problem] = []

    def walk(value: Any, path: tuple[str | int, ...]) -> Any:
        if is_reference(value):
            found = lookup(value[SECRET_KEY])
            if found is None:
                node_id = result["nodes"][path[1]]["id"] if len(path) > 1 and path[0] == "nodes" else None
                problems.append(Problem("unknown_secret", f"secret {value[SECRET_KEY]!r} is not stored",
                                        pointer_of(*path), node_id if isinstance(node_id, str) else None,
                                        hint="store it: PUT /api/v1/secrets/{name} on the control plane, "
                                        "or env STREAMFORGE_SECRET_<NAME> for streamforge run"))  # fmt: skip
                return value
            return found
        if isinstance(value, dict):
            return {key: walk(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [walk(item, (*path, index)) for index, item in enumerate(value)]
        return value

    result["nodes"] = [walk(node, ("nodes", index)) for index, node in enumerate(result.get("nodes", []))]
    if problems:
        raise FlowInvalid(problems)
    return result


def references(document: dict[str, Any]) -> set[str]:
    """The names of every secret the document refers to."""
    names: set[str] = set()

    def record(name: str) -> str:
        names.add(name)
        return ""

    resolve(document, record)
    return names


def placeholders(document: dict[str, Any]) -> dict[str, Any]:
    """Resolve every reference to a stand-in, to validate a draft without reading any secret."""
    return resolve(document, lambda name: f"<secret {name}>")
