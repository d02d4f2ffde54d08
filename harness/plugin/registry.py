"""Name-keyed registries filled by the ``register_*`` hooks."""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from harness.errors import HarnessError
from harness.plugin.algorithm import with_defaults
from harness.plugin.protocols import missing_members

T = TypeVar("T")

#: Optional members of the other kinds with their defaults, set on an object that lacks them when it
#: registers (an algorithm gets ``harness.plugin.algorithm.ImageAlgorithm``'s): the core reads them directly.
OPTIONAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "environment": {"paper_returns": MappingProxyType({})},
    "evaluator": {"options": None},  # None: options passed as given, untyped
}


def _with_defaults(kind: str, obj: Any) -> Any:
    if kind == "algorithm":
        obj = with_defaults(obj)
    for member, default in {"description": "", **OPTIONAL_DEFAULTS.get(kind, {})}.items():
        if not hasattr(obj, member):
            try:
                setattr(obj, member, default)
            except (AttributeError, TypeError):
                raise HarnessError(f"{kind} {obj.name!r} has no {member!r} and takes no default for it") from None
    return obj


class Registry(Generic[T]):
    """Objects of one kind (algorithms, backbones, ...) keyed by their ``name``.

    ``current_plugin`` is set by the plugin manager while it calls one
    plugin's registration hook, so every entry knows which plugin added it.
    Two plugins registering one name is not an error until the name is used:
    ``get`` then names both (and how to block one), while every other name,
    ``harness plugins`` and ``--help`` keep working.
    """

    def __init__(self, kind: str):
        self.kind = kind  # singular, e.g. "algorithm"
        self._entries: dict[str, list[tuple[T, str]]] = {}
        self.current_plugin = "<unknown>"

    def add(self, obj: T) -> T:
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise HarnessError(
                f"plugin {self.current_plugin!r} registered a {self.kind} without a string 'name' attribute: {obj!r}"
            )
        obj = _with_defaults(self.kind, obj)
        missing = missing_members(self.kind, obj)
        if missing:
            raise HarnessError(
                f"plugin {self.current_plugin!r} registered {self.kind} {name!r} without {', '.join(missing)} "
                f"(harness/plugin/hookspecs.py, harness.plugin.protocols)"
            )
        self._entries.setdefault(name, []).append((obj, self.current_plugin))
        return obj

    def get(self, name: str) -> T:
        entries = self._entries.get(name)
        if not entries:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise HarnessError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}")
        if len(entries) > 1:
            raise HarnessError(self.collision(name))
        return entries[0][0]

    def collision(self, name: str) -> str:
        plugins = [plugin for _, plugin in self._entries[name]]
        return (
            f"{self.kind} {name!r} is registered twice: by plugin {plugins[0]!r} and by plugin {plugins[1]!r}; "
            f"leave one out with HARNESS_BLOCK_PLUGINS={plugins[-1]}"
        )

    def colliding_names(self) -> set[str]:
        """Names two plugins registered."""
        return {name for name, entries in self._entries.items() if len(entries) > 1}

    def collisions(self) -> list[str]:
        return [self.collision(name) for name in sorted(self._entries) if len(self._entries[name]) > 1]

    def remove_plugin(self, plugin: str) -> None:
        """Forget everything ``plugin`` registered (its registration hook failed part-way)."""
        for name in list(self._entries):
            self._entries[name] = [entry for entry in self._entries[name] if entry[1] != plugin]
            if not self._entries[name]:
                del self._entries[name]

    def plugin_of(self, name: str) -> str:
        return self._entries[name][0][1]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T, str]]:
        """``(name, object, plugin)``; a name two plugins registered comes once per plugin."""
        for name in sorted(self._entries):
            for obj, plugin in self._entries[name]:
                yield name, obj, plugin

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
