"""Node registry: built-ins load, incomplete classes and duplicate names are load errors."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from streamforge.engine.node_types import NodeTypeError, NodeTypes, load_node_types
from streamforge.engine.sdk import Kind, NodeConfig, Port, PortType, ProcessorNode
from streamforge.nodes.validator import Validator


def test_builtins_are_registered_with_full_declarations() -> None:
    registry = load_node_types(include_plugins=False)
    assert {"simulator", "validator", "aggregator"} <= set(registry.names())
    entry = registry.get("validator")
    assert entry is not None
    described = entry.describe()
    assert described["kind"] == "processor" and described["category"] == "processing"
    assert [p["name"] for p in described["outputs"]] == ["clean", "dlq", "events"]
    assert described["config_schema"]["properties"]["rules"]["type"] == "array"


def test_duplicate_type_name_is_a_load_error() -> None:
    class Impostor(ProcessorNode[NodeConfig]):
        type = "validator"
        inputs = (Port("in", PortType.ANY),)

    registry = NodeTypes([(Validator, "built-in")])
    with pytest.raises(NodeTypeError, match=r"'validator' from package evil is already registered by built-in"):
        registry.register(Impostor, "package evil")


def test_deferred_builtins_are_imported_only_when_used_and_look_the_same() -> None:
    code = """
import sys
from streamforge.engine.node_types import load_node_types
deferred = load_node_types(include_plugins=False, deferred=True)
names, packages = deferred.names(), deferred.packages()
assert "streamforge.nodes.opcua" not in sys.modules and "asyncua" not in sys.modules
assert deferred.get("validator") is not None and deferred.get("no_such_type") is None
assert "streamforge.nodes.validator" in sys.modules and "asyncua" not in sys.modules
full = load_node_types(include_plugins=False)
assert names == full.names() and packages == full.packages()
assert [cls.type for cls in deferred] == [cls.type for cls in full]
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)  # a fresh sys.modules
    assert done.returncode == 0, done.stderr


def test_a_type_named_like_a_deferred_builtin_is_refused() -> None:
    class Impostor(ProcessorNode[NodeConfig]):
        type = "opcua"
        inputs = (Port("in", PortType.ANY),)

    registry = load_node_types(include_plugins=False, deferred=True)
    with pytest.raises(NodeTypeError, match=r"'opcua' from package evil is already registered"):
        registry.register(Impostor, "package evil")


def test_incomplete_class_is_refused_with_what_is_missing() -> None:
    class Half(ProcessorNode[Any]):  # no config model
        inputs = (Port("in", PortType.ANY), Port("in", PortType.ANY))

    with pytest.raises(NodeTypeError, match=r"needs a `type` name, a config model .*unique port names in `inputs`"):
        NodeTypes().register(Half, "test")
    assert Half.kind is Kind.PROCESSOR
