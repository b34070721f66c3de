"""Named plug-ins: searchers, latency backends, datasets, model families.

Each extension point keeps one :class:`Registry` mapping a name to ``"package.module:attr"``.
Entries are imported on first use, so listing or validating names (the config does) imports no
implementation — no torch, Ray or Optuna at config time, and no import cycles. Adding a plug-in
is one module plus one ``register`` line.

>>> r = Registry("widget", {"json": "json:dumps"})
>>> r.names(), r.get("json")([1])
(('json',), '[1]')
>>> r.check("yaml", "widget.name")
Traceback (most recent call last):
...
autoprune.errors.ConfigError: widget.name is 'yaml'; choose one of json
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any, Generic, TypeVar, cast

from autoprune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → lazily imported implementations of one kind of plug-in.

    Args:
        kind: what the entries are ("searcher", "latency backend", …), for error messages.
        entries: initial ``name → "module:attr"`` (or the object itself).
    """

    def __init__(self, kind: str, entries: Mapping[str, str | T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, str | T] = dict(entries or {})
        self._loaded: dict[str, T] = {}

    def register(self, name: str, target: str | T) -> None:
        """Add (or replace) ``name``: a ``"module:attr"`` path or the object itself."""
        self._entries[name] = target
        self._loaded.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: str, key: str) -> None:
        """Raise a one-line :class:`ConfigError` naming ``key`` unless ``name`` is registered."""
        if name not in self._entries:
            raise ConfigError(f"{key} is {name!r}; choose one of {', '.join(self._entries)}")

    def get(self, name: str) -> T:
        """The implementation registered as ``name`` (imported on first use)."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self._entries)}"
            )
        target = self._entries[name]
        obj = cast(T, _load(target)) if isinstance(target, str) else target
        self._loaded[name] = obj
        return obj


def _load(path: str) -> Any:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def import_factory(spec: str, what: str, error: type[Exception] = ConfigError) -> Any:
    """A user's ``module:factory`` (or ``package.module:factory``), imported from ``sys.path``;
    a one-line ``error`` that says where the module must be when it cannot be found."""
    module = spec.partition(":")[0]
    try:
        return _load(spec)
    except ModuleNotFoundError as e:
        raise error(
            f"cannot import {what} {spec!r}: {e}; put {module.split('.')[0]}.py (or its "
            "package) in the folder you run autoprune from, or add its folder to PYTHONPATH"
        ) from e
    except (ImportError, AttributeError) as e:
        raise error(f"cannot import {what} {spec!r}: {e}") from e


__all__ = ["Registry", "import_factory"]
