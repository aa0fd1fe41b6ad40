"""Name -> class registries, so configs select models and losses by name (no if/elif dispatch).

A registry also knows which constructor parameters a config may set (:meth:`Registry.options`), so
:func:`voxprint.config.check_config` validates a section's keys against the class it selects, and
:meth:`Registry.build` turns a constructor's complaint about a value into a one-line
:class:`~voxprint.errors.ConfigError` that names the section and the option.
"""
from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from voxprint.config import check_keys, closest
from voxprint.errors import ConfigError

T = TypeVar("T")

# What a constructor raises for a bad option value; anything else is a bug and keeps its traceback.
_VALUE_ERRORS = (ValueError, TypeError, AssertionError, KeyError)


class Registry:
    """A mapping from a config name to a constructor.

    Args:
        kind: What is registered, for messages (``"model"``).
        section: The config section whose options go to the constructor (default: ``kind``).
        injected: Constructor parameters the code fills in, mapped to where their value comes from;
            a config may not set them.

    Example:
        >>> reg = Registry("model", injected={"input_dim": "the front-end"})
        >>> @reg.register("tiny")
        ... class Tiny:
        ...     def __init__(self, input_dim: int = 1, size: int = 1):
        ...         if size < 1:
        ...             raise ValueError(f"size must be positive, got {size}")
        ...         self.size = size
        >>> reg.build("tiny", size=3).size
        3
        >>> reg.options("tiny")
        ('size',)
        >>> reg.build("tiny", size=0)
        Traceback (most recent call last):
        ...
        voxprint.errors.ConfigError: config: bad options for model 'tiny' in section 'model', option 'size': size must be positive, got 0
    """

    def __init__(self, kind: str, section: str | None = None, injected: Mapping[str, str] | None = None):
        self.kind = kind
        self.section = section or kind
        self.injected = dict(injected or {})
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering a class (or a factory) under ``name``.

        Raises:
            ValueError: ``name`` is registered already.
        """
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj  # type: ignore[assignment]
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        """The constructor registered as ``name``.

        Raises:
            ConfigError: No such name (the message lists the known ones and the closest).
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name such as a YAML list
            known = ", ".join(sorted(self._entries)) or "none"
            match = closest(name, self._entries)
            hint = f"; did you mean {match!r}?" if match else ""
            raise ConfigError(f"config: unknown {self.kind} {name!r}; known: {known}{hint}") from None

    def parameters(self, name: str) -> tuple[str, ...] | None:
        """Every keyword parameter of ``name``'s constructor, or None when they cannot be listed.

        A factory taking ``**options`` and annotated to return a class (e.g. ``resnet18 -> ResNet34``)
        takes that class's parameters too.
        """
        constructor = self.get(name)
        params = list(inspect.signature(constructor).parameters.values())
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if any(p.kind is p.VAR_KEYWORD for p in params):
            try:
                target = typing.get_type_hints(constructor).get("return")
            except Exception:  # unresolvable annotations: the options are unknown, not an error
                target = None
            if not inspect.isclass(target):
                return None
            names += [n for n in inspect.signature(target).parameters if n not in names]
        return tuple(names)

    def options(self, name: str) -> tuple[str, ...] | None:
        """The constructor parameters of ``name`` that a config may set (those not injected).

        Returns:
            Their names, or None when the constructor's options cannot be listed.

        Raises:
            ConfigError: ``name`` is not registered.
        """
        params = self.parameters(name)
        return None if params is None else tuple(p for p in params if p not in self.injected)

    def build(self, name: str, **kwargs: Any) -> Any:
        """Construct ``name`` with ``kwargs`` (the config section's options plus injected values).

        Raises:
            ConfigError: Unknown name, unknown option, or a value the constructor rejects
                (ValueError, TypeError, AssertionError, KeyError), in one line naming the section
                and, when it can be told, the option.
        """
        constructor = self.get(name)
        params = self.parameters(name)
        if params is not None:
            try:
                check_keys(kwargs, params, self.section)
            except ConfigError as exc:
                raise ConfigError(f"config: bad options for {self.kind} {name!r}: "
                                  f"{str(exc).removeprefix('config: ')}") from None
        try:
            return constructor(**kwargs)
        except _VALUE_ERRORS as exc:
            raise ConfigError(self._bad_value(name, kwargs, exc)) from exc

    def _bad_value(self, name: str, kwargs: dict[str, Any], exc: BaseException) -> str:
        text = " ".join(str(exc).split()) or type(exc).__name__
        where = f"config: bad options for {self.kind} {name!r} in section {self.section!r}"
        option = _culprit(text, kwargs)
        if option in self.injected:
            return f"{where} (option {option!r}, set by voxprint from {self.injected[option]}): {text}"
        if option is not None:
            return f"{where}, option {option!r}: {text}"
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k not in self.injected)
        return f"{where}: {text}" + (f" (options: {given})" if given else "")

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


def _culprit(text: str, kwargs: dict[str, Any]) -> str | None:
    """The option an error message is about: the one it names (or whose value it quotes), if unique."""
    named = [k for k in kwargs if re.search(rf"(?<![\w.]){re.escape(k)}(?!\w)", text)]
    if len(named) != 1:
        # Several names (or none): the message usually quotes the offending value.
        quoted = [k for k in (named or kwargs) if isinstance(kwargs[k], str) and repr(kwargs[k]) in text]
        named = quoted if len(quoted) == 1 else []
    return named[0] if named else None


MODELS = Registry("model", injected={"input_dim": "the front-end's output size"})
LOSSES = Registry("loss", injected={"embedding_dim": "the model's embedding size",
                                    "num_classes": "the number of training speakers"})
FRONTENDS = Registry("feature front-end", section="features",
                     injected={"sample_rate": "the top-level sample_rate"})
