"""Secrets in flows: configs hold `{"$secret": "name"}` references; values live apart, encrypted at rest."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from streamforge.engine.node_types import NodeTypes
from streamforge.engine.problems import FlowInvalid, Problem, pointer_of

SECRET_KEY = "$secret"


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {SECRET_KEY} and isinstance(value[SECRET_KEY], str)


def secret_paths(node_types: NodeTypes, type_name: str, config: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Where `config` holds a plaintext value of a field its node type declares SecretStr, at any depth (an alert
    router's destinations, a list of credentials): the same schema the editor masks by."""
    cls = node_types.get(type_name)
    if cls is None:
        return []
    schema = _config_schema(cls.Config)
    found: set[tuple[str | int, ...]] = set()
    _walk(schema, schema.get("$defs", {}), config, (), found)
    return sorted(found, key=str)


@functools.cache
def _config_schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _walk(schema: dict[str, Any], definitions: dict[str, Any], value: Any, path: tuple[str | int, ...],
          found: set[tuple[str | int, ...]]) -> None:  # fmt: skip
    if "$ref" in schema:
        schema = {**definitions.get(schema["$ref"].removeprefix("#/$defs/"), {}), **schema}
        schema.pop("$ref")
    if schema.get("format") == "password" and schema.get("writeOnly"):  # pydantic's SecretStr
        if isinstance(value, str) and value:
            found.add(path)
        return
    options = schema.get("oneOf") or schema.get("anyOf") or []
    tag = (schema.get("discriminator") or {}).get("propertyName")
    if tag and isinstance(value, dict) and value.get(tag) in schema["discriminator"].get("mapping", {}):
        options = [{"$ref": schema["discriminator"]["mapping"][value[tag]]}]
    for option in options:
        _walk(option, definitions, value, path, found)
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                _walk(sub, definitions, item, (*path, key), found)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _walk(schema["items"], definitions, item, (*path, index), found)


def externalize(document: dict[str, Any], node_types: NodeTypes, keep: Callable[[str, str], None]) -> dict[str, Any]:
    """A copy where every plaintext value of a secret field is handed to `keep(name, value)` and replaced by a
    reference named `<flow>.<node>.<path>` (e.g. `line.router.destinations.oncall.routing_key`); so no stored or
    exported document ever holds a secret value."""
    result = copy.deepcopy(document)
    for node in result.get("nodes", []):
        config = node.get("config", {})
        for path in secret_paths(node_types, node.get("type", ""), config):
            *parents, last = path
            holder: Any = config
            for step in parents:
                holder = holder[step]
            name = ".".join(str(step) for step in (result["id"], node["id"], *path))
            keep(name, holder[last])
            holder[last] = {SECRET_KEY: name}
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


def own_secret(flow_id: str, name: str) -> bool:
    """Secrets are scoped to their flow: `<flow>.…` is the flow's own; any other needs an Admin's grant."""
    return name.startswith(f"{flow_id}.")


def unreadable(document: dict[str, Any], readable: Callable[[str], bool]) -> list[Problem]:
    """A located problem for every reference to a secret this flow may not read (another flow's, not granted to
    it): no Engineer sends another flow's credentials to a server of their own by naming them."""
    problems: list[Problem] = []
    flow_id = str(document.get("id", ""))

    def check(value: Any, path: tuple[str | int, ...], node_id: str | None) -> None:
        if is_reference(value):
            name = value[SECRET_KEY]
            if not readable(name):
                problems.append(Problem("secret_not_granted", f"secret {name!r} is not flow {flow_id!r}'s own and "
                                        "is not granted to it", pointer_of(*path), node_id,
                                        hint=f"use a secret named {flow_id}.<name>, or ask an Admin to grant this "
                                        f"one: PUT /api/v1/secrets/{name}/grants/{flow_id}"))  # fmt: skip
        elif isinstance(value, dict):
            for key, item in value.items():
                check(item, (*path, key), node_id)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                check(item, (*path, index), node_id)

    for index, node in enumerate(document.get("nodes", [])):
        if isinstance(node, dict):
            node_id = node.get("id")
            check(node, ("nodes", index), node_id if isinstance(node_id, str) else None)
    return problems


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
