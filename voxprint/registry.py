"""Name -> class registries, so configs select models and losses by name (no if/elif dispatch)."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

from voxprint.errors import ConfigError

T = TypeVar("T")


class Registry:
    """A mapping from a config name to a constructor.

    Example:
        >>> reg = Registry("model")
        >>> @reg.register("tiny")
        ... class Tiny:
        ...     def __init__(self, size: int = 1):
        ...         self.size = size
        >>> reg.build("tiny", size=3).size
        3
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj  # type: ignore[assignment]
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        constructor = self.get(name)
        try:
            return constructor(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"bad options for {self.kind} {name!r}: {exc}") from exc

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


MODELS = Registry("model")
LOSSES = Registry("loss")
FRONTENDS = Registry("feature front-end")
