"""One registry of node specs. Built-in and third-party nodes both arrive through the
entry-point group `loom.nodes`, so the engine never imports the `nodes` package itself."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from types import MappingProxyType, ModuleType
from typing import Any

from .estimates import Estimator
from .modelpaths import ModelKind
from .spec import Node
from .types import CORE_TYPES, LinkType, define

ENTRY_POINT_GROUP = "loom.nodes"
log = logging.getLogger("loom.registry")


class Registry:
    """Node classes, and the link types and model kinds their packages bring."""

    def __init__(self) -> None:
        self._types: dict[str, type[Node]] = {}
        self._aliases: dict[str, str] = {}
        self._link_types: dict[str, LinkType] = {t: t for t in CORE_TYPES}
        self._model_kinds: dict[str, ModelKind] = {}
        self._estimators: dict[str, Estimator] = {}
        self.plugin_errors: dict[str, str] = {}

    def add_link_type(self, t: LinkType) -> LinkType:
        """Add a package's link type (its connect rules and editor colour travel on it)."""
        old = self._link_types.get(t)
        if old is not None and not old.same_rules(t):
            raise ValueError(f"link type {t} is already registered with other rules")
        self._link_types[t] = define(t)
        return t

    def add_model_kind(self, kind: ModelKind) -> ModelKind:
        """Add a package's model kind: a folder under each model root."""
        if not isinstance(kind, ModelKind):
            raise TypeError(f"{kind!r} is not a ModelKind")
        old = self._model_kinds.get(kind)
        if old is not None and old is not kind:
            raise ValueError(f"model kind {kind} is already registered")
        self._model_kinds[kind] = kind
        return kind

    def add_estimator(self, type_id: str, fn: Estimator) -> None:
        """A package's memory estimate for one of its node types (engine.estimates)."""
        self._estimators[type_id] = fn

    def estimator(self, type_id: str) -> Estimator | None:
        return self._estimators.get(self.canonical(type_id))

    @property
    def link_types(self) -> Mapping[str, LinkType]:
        return MappingProxyType(self._link_types)

    @property
    def model_kinds(self) -> Mapping[str, ModelKind]:
        return MappingProxyType(self._model_kinds)

    def link_type(self, name: str) -> LinkType | None:
        return self._link_types.get(name)

    def register(self, cls: type[Node]) -> type[Node]:
        """Add a node class; usable as a decorator. Ids and aliases must be unique."""
        if not (isinstance(cls, type) and issubclass(cls, Node)) or "type" not in cls.__dict__:
            raise TypeError(f"{cls!r} is not a node class with a `type` id")
        for name in (cls.type, *cls.aliases):
            owner = self._types.get(name) or self._types.get(self._aliases.get(name, ""))
            if owner is not None and owner is not cls:
                raise ValueError(f"node type id {name!r} is already taken by {owner.__name__}")
        self._types[cls.type] = cls
        for alias in cls.aliases:
            self._aliases[alias] = cls.type
        return cls

    def register_all(self, classes: Iterable[type[Node]]) -> None:
        for cls in classes:
            self.register(cls)

    def get(self, type_id: str) -> type[Node] | None:
        """The node class for an id or one of its old aliases; None if unknown."""
        cls = self._types.get(type_id)
        if cls is None and type_id in self._aliases:
            cls = self._types[self._aliases[type_id]]
        return cls

    def __getitem__(self, type_id: str) -> type[Node]:
        """The class of a node type known to be registered (a validated graph's nodes)."""
        cls = self.get(type_id)
        if cls is None:
            raise KeyError(f"unknown node type {type_id!r}")
        return cls

    def canonical(self, type_id: str) -> str:
        return self._aliases.get(type_id, type_id)

    def __contains__(self, type_id: object) -> bool:
        return isinstance(type_id, str) and self.get(type_id) is not None

    def __iter__(self) -> Iterator[type[Node]]:
        return iter(sorted(self._types.values(), key=lambda c: (c.category, c.type)))

    def __len__(self) -> int:
        return len(self._types)

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Register every node package installed under the entry-point group.

        A broken plugin is recorded in `plugin_errors` and logged; it never stops Loom.
        """
        eps = metadata.entry_points(group=group)
        for ep in sorted(eps, key=lambda e: (e.name != "builtin", e.name)):
            try:
                self._register_object(ep.load())
            except Exception as exc:  # a third-party package must not take Loom down
                self.plugin_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("node package %s failed to load: %s", ep.name, exc)

    def _register_object(self, obj: Any) -> None:
        if isinstance(obj, ModuleType):
            if hasattr(obj, "register"):
                obj.register(self)
            else:
                self.register_all(obj.NODES)
        elif isinstance(obj, type) and issubclass(obj, Node):
            self.register(obj)
        elif callable(obj):
            obj(self)
        else:
            self.register_all(obj)


def default_registry() -> Registry:
    """A fresh registry with the built-in nodes and every installed node package."""
    reg = Registry()
    reg.load_entry_points()
    return reg
