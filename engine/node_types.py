"""The node-type registry: built-ins plus third-party packages from the `streamforge.nodes` entry points."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import Any

from streamforge.engine.sdk import Kind, Node, NodeClass, NodeConfig, Port

ENTRY_POINT_GROUP = "streamforge.nodes"
BUILTIN_PACKAGE = "streamforge.nodes"


class NodeTypeError(RuntimeError):
    """A node type that cannot be registered: duplicate name, or an incomplete declaration."""


def check_node_class(cls: Any, origin: str) -> NodeClass:
    """Refuse a class that does not declare what the SDK requires, saying what is missing."""
    if not (isinstance(cls, type) and issubclass(cls, Node)):
        raise NodeTypeError(f"{origin}: {cls!r} is not a streamforge Node subclass")
    problems = []
    if not isinstance(getattr(cls, "type", None), str) or not cls.type:
        problems.append("a `type` name")
    if not isinstance(getattr(cls, "kind", None), Kind):
        problems.append("a `kind` (subclass SourceNode, ProcessorNode or SinkNode)")
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, NodeConfig)):
        problems.append("a config model as the generic parameter (ProcessorNode[MyConfig], MyConfig a NodeConfig)")
    for side in ("inputs", "outputs"):
        ports = getattr(cls, side, ())
        if not all(isinstance(port, Port) for port in ports):
            problems.append(f"`{side}` as a tuple of Port")
        names = [port.name for port in ports]
        if len(names) != len(set(names)):
            problems.append(f"unique port names in `{side}`")
    if problems:
        raise NodeTypeError(f"{origin}: node class {cls.__name__} needs " + ", ".join(problems))
    return cls


class NodeTypes:
    """Every node type by its unique name.

    `deferred`: built-in type names whose modules are imported only when first asked for (a built-in's module is
    named after its type). Every protocol library together is ~85 MB of a process that runs two of them."""

    def __init__(self, classes: Iterable[tuple[NodeClass, str]] = (), deferred: Iterable[str] = ()) -> None:
        self._types: dict[str, NodeClass] = {}
        self._origins: dict[str, str] = {}
        self._packages: dict[str, str] = {}
        self._deferred = set(deferred)
        self.includes_plugins = False  # installed plugins were loaded into it (a compiler process loads the same)
        for cls, origin in classes:
            self.register(cls, origin)

    def register(self, cls: Any, origin: str = "code", package: str | None = None) -> NodeClass:
        """`package`: the distribution that provides it, as `name==version` (what a gateway reports)."""
        checked = check_node_class(cls, origin)
        if checked.type in self._types or checked.type in self._deferred:
            holder = self._origins.get(checked.type, f"built-in {BUILTIN_PACKAGE}.{checked.type}")
            raise NodeTypeError(
                f"node type {checked.type!r} from {origin} is already registered by {holder}; "
                "type names must be unique: rename one of them"
            )
        self._types[checked.type] = checked
        self._origins[checked.type] = origin
        self._packages[checked.type] = package or f"streamforge=={_own_version()}"
        return checked

    def get(self, type_name: str) -> NodeClass | None:
        if type_name in self._deferred:
            self._deferred.discard(type_name)
            module = importlib.import_module(f"{BUILTIN_PACKAGE}.{type_name}")
            self.register(module.NODE, f"built-in {module.__name__}")
        return self._types.get(type_name)

    def __iter__(self) -> Iterator[NodeClass]:
        for name in sorted(self._deferred):
            self.get(name)
        return iter(sorted(self._types.values(), key=lambda cls: (cls.category, cls.type)))

    def origin(self, type_name: str) -> str:
        self.get(type_name)
        return self._origins[type_name]

    def names(self) -> list[str]:
        return sorted(self._types.keys() | self._deferred)

    def packages(self) -> dict[str, str]:
        """Each type's providing package and version: what a gateway has installed, or a flow needs."""
        own = f"streamforge=={_own_version()}"
        return dict(sorted({**self._packages, **dict.fromkeys(self._deferred, own)}.items()))


def _own_version() -> str:
    try:
        return version("streamforge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def builtin_classes() -> Iterator[tuple[NodeClass, str]]:
    """Each module of `streamforge.nodes` declares one node type in its module-level `NODE`."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    for module_info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{BUILTIN_PACKAGE}.{module_info.name}")
        node = getattr(module, "NODE", None)
        if node is not None:
            yield node, f"built-in {module.__name__}"


def plugin_classes() -> Iterator[tuple[NodeClass, str, str | None]]:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:  # a broken plugin must name itself, not crash with a bare traceback
            raise NodeTypeError(f"entry point {entry.name} = {entry.value} failed to load: {exc!r}") from exc
        package = f"{entry.dist.name}=={entry.dist.version}" if entry.dist else None
        yield loaded, f"package {package or '?'} (entry point {entry.name})", package


def node_types_for(type_name: str) -> NodeTypes:
    """A registry with just `type_name`: a worker process imports only its own node's module (a built-in's is
    named after its type), not every protocol library; any other type needs the full registry."""
    with contextlib.suppress(ImportError):
        module = importlib.import_module(f"{BUILTIN_PACKAGE}.{type_name}")
        node = getattr(module, "NODE", None)
        if node is not None and getattr(node, "type", None) == type_name:
            return NodeTypes([(node, f"built-in {module.__name__}")])
    return load_node_types()


def builtin_names() -> list[str]:
    """The built-in node types, by their modules' names, nothing imported."""
    package = importlib.import_module(BUILTIN_PACKAGE)
    return [info.name for info in pkgutil.iter_modules(package.__path__) if not info.ispkg]


def load_node_types(include_plugins: bool = True, deferred: bool = False) -> NodeTypes:
    """Built-ins, then installed plugins; a duplicate type name is a load error. `deferred`: built-ins are imported
    when first used (a gateway, `streamforge run`), not all up front (the editor's palette needs every one)."""
    registry = NodeTypes(deferred=builtin_names()) if deferred else NodeTypes(builtin_classes())
    if include_plugins:
        for cls, origin, package in plugin_classes():
            registry.register(cls, origin, package)
        registry.includes_plugins = True
    return registry
