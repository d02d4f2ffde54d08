"""Name-keyed registries filled by the ``register_*`` hooks."""

from __future__ import annotations

from typing import Any, Iterator

from harness.errors import HarnessError


class Registry:
    """Objects of one kind (algorithms, backbones, ...) keyed by their ``name``.

    ``current_plugin`` is set by the plugin manager while it calls one
    plugin's registration hook, so every entry knows which plugin added it.
    """

    def __init__(self, kind: str):
        self.kind = kind  # singular, e.g. "algorithm"
        self._entries: dict[str, tuple[Any, str]] = {}
        self.current_plugin = "<unknown>"

    def add(self, obj: Any) -> Any:
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name:
            raise HarnessError(
                f"plugin {self.current_plugin!r} registered a {self.kind} without a string 'name' attribute: {obj!r}"
            )
        if name in self._entries:
            other = self._entries[name][1]
            raise HarnessError(
                f"{self.kind} {name!r} is registered twice: by plugin {other!r} and by plugin {self.current_plugin!r}"
            )
        self._entries[name] = (obj, self.current_plugin)
        return obj

    def get(self, name: str) -> Any:
        try:
            return self._entries[name][0]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "(none registered)"
            raise HarnessError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}") from None

    def plugin_of(self, name: str) -> str:
        return self._entries[name][1]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, Any, str]]:
        for name in sorted(self._entries):
            obj, plugin = self._entries[name]
            yield name, obj, plugin

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
