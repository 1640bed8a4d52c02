"""The node-type registry: built-ins plus third-party packages from the `streamforge.nodes` entry points."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from typing import Any

from streamforge.engine.sdk import Kind, Node, NodeClass, NodeConfig, Port

ENTRY_POINT_GROUP = "streamforge.nodes"
BUILTIN_PACKAGE = "streamforge.nodes"


class RegistryError(RuntimeError):
    """A node type that cannot be registered: duplicate name, or an incomplete declaration."""


def check_node_class(cls: Any, origin: str) -> NodeClass:
    """Refuse a class that does not declare what the SDK requires, saying what is missing."""
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise RegistryError(f"{origin}: {cls!r} is not a streamforge Node subclass")
    problems = []
    if not isinstance(getattr(cls, "type", None), str) or not cls.type:
        problems.append("a `type` name")
    if not isinstance(getattr(cls, "kind", None), Kind):
        problems.append("a `kind` (subclass SourceNode, ProcessorNode or SinkNode)")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, NodeConfig)):
        problems.append("a `Config` model subclassing NodeConfig")
    for side in ("inputs", "outputs"):
        ports = getattr(cls, side, ())
        if not all(isinstance(port, Port) for port in ports):
            problems.append(f"`{side}` as a tuple of Port")
        names = [port.name for port in ports]
        if len(names) != len(set(names)):
            problems.append(f"unique port names in `{side}`")
    if problems:
        raise RegistryError(f"{origin}: node class {cls.__name__} needs " + ", ".join(problems))
    return cls


class NodeRegistry:
    """Every node type by its unique name."""

    def __init__(self, classes: Iterable[tuple[NodeClass, str]] = ()) -> None:
        self._types: dict[str, NodeClass] = {}
        self._origins: dict[str, str] = {}
        for cls, origin in classes:
            self.register(cls, origin)

    def register(self, cls: Any, origin: str = "code") -> NodeClass:
        checked = check_node_class(cls, origin)
        if checked.type in self._types:
            raise RegistryError(
                f"node type {checked.type!r} from {origin} is already registered by {self._origins[checked.type]}; "
                "type names must be unique: rename one of them"
            )
        self._types[checked.type] = checked
        self._origins[checked.type] = origin
        return checked

    def get(self, type_name: str) -> NodeClass | None:
        return self._types.get(type_name)

    def __iter__(self) -> Iterator[NodeClass]:
        return iter(sorted(self._types.values(), key=lambda cls: (cls.category, cls.type)))

    def origin(self, type_name: str) -> str:
        return self._origins[type_name]

    def names(self) -> list[str]:
        return sorted(self._types)


def builtin_classes() -> Iterator[tuple[NodeClass, str]]:
    """Each module of `streamforge.nodes` declares one node type in its module-level `NODE`."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{BUILTIN_PACKAGE}.{module_info.name}")
        node = getattr(module, "NODE", None)
        if node is not None:
            yield node, f"built-in {module.__name__}"


def plugin_classes() -> Iterator[tuple[NodeClass, str]]:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken plugin must name itself, not crash with a bare traceback
            raise RegistryError(f"entry point {entry.name} = {entry.value} failed to load: {exc!r}") from exc
        yield loaded, f"package {entry.dist.name if entry.dist else '?'} (entry point {entry.name})"


def load_registry(include_plugins: bool = True) -> NodeRegistry:
    """Built-ins, then installed plugins; a duplicate type name is a load error."""
    registry = NodeRegistry(builtin_classes())
    if include_plugins:
        for cls, origin in plugin_classes():
            registry.register(cls, origin)
    return registry
