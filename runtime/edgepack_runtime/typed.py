"""Strict dict → frozen dataclass, for every document edgepack reads: bundle manifests
(JSON), target profiles and device inventories (TOML). Keys, types and ranges are checked
against the dataclass's own type hints; each caller turns a `Problem` into its own error."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Callable, Iterable, Optional

__all__ = ["Problem", "from_data", "did_you_mean"]


class Problem(ValueError):
    """What is wrong with a document, and where in it."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")
        self.where, self.problem = where, problem


def did_you_mean(value: str, choices: Iterable[object]) -> str:
    """'did you mean 'x'? ' for the closest of `choices`, or '' (the start of a fix hint)."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def from_data(cls: type, data: Any, where: str, *, tolerate_unknown: bool = False,
              check: Optional[Callable[[Any, str], None]] = None, suggest: Iterable[str] = ()) -> Any:
    """Dataclass `cls` from `data`, recursively (nested dataclasses, Optional, tuple[X, ...]
    from lists). Unknown keys are a Problem with a did-you-mean (among `cls`'s fields and
    `suggest`), or dropped with `tolerate_unknown` (a newer minor's additions); `check(obj,
    where)` adds rules types do not say, for every dataclass built."""
    if not isinstance(data, dict):
        raise Problem(where, "must be a table of keys and values")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if tolerate_unknown:
        data = {k: v for k, v in data.items() if k in fields}
    for key in data:
        if key not in fields:
            raise Problem(where, f"has unknown key {str(key)[:40]!r}; "
                                 f"{did_you_mean(key, [*fields, *suggest])}".rstrip())
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise Problem(where, f"is missing {', '.join(missing)}")
    hints = typing.get_type_hints(cls)
    nested = {"tolerate_unknown": tolerate_unknown, "check": check}
    obj = cls(**{name: _value(hints[name], value, f"{where}.{name}", nested) for name, value in data.items()})
    if check is not None:
        check(obj, where)
    return obj


def _value(hint: Any, value: Any, where: str, nested: dict[str, Any]) -> Any:
    """`value` checked against the type `hint` (lists become tuples where the hint says tuple)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _value(inner, value, where, nested)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):  # a hint is a class, never an instance
        return from_data(hint, value, where, **nested)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise Problem(where, "must be a list")
        return tuple(_value(args[0], v, f"{where}[{i}]", nested) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise Problem(where, f"must be true or false, not {type(value).__name__}")
        return value
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise Problem(where, "must be a non-negative integer")
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise Problem(where, "must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str) or "\x00" in value:
            raise Problem(where, "must be a string without NUL characters")
        return value
    if hint is dict or origin in (dict, typing.Mapping) or hint is typing.Mapping:
        if not isinstance(value, dict):
            raise Problem(where, "must be a table of keys and values")
        return value
    raise TypeError(f"field type {hint!r} has no reader")  # a programming error, not bad input
