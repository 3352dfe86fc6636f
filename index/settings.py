"""What a setting of the library may hold: its range or choices, and the config key naming it.

A settings record (`Settings`, `RetrievalSettings`, `AnswerSettings`) declares each field once,
with `setting()` when it needs more than its type: a range, a list of choices, or a config key
other than `[section] field`. The library reads no config; bot/config.py derives the config
file's sections from these fields and checks every value with `check_setting()` when it loads.

A field declared without `setting()` is still a config key: a number must then be finite and
0 or more, a string hold no NUL character.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any


def setting(default: Any, *, min: float | None = 0, max: float | None = None,
            above: float | None = None, choices: Sequence[str] | None = None,
            empty: bool = True, secret: bool = False, key: str | None = None,
            doc: str = "") -> Any:
    """A dataclass field with what it may hold.

    Args:
        min, max: inclusive bounds of a number (or of a list's numbers); None for none.
        above: an exclusive lower bound, for values that must be more than it.
        choices: the only strings allowed.
        empty: whether "" is allowed (for a list of strings: as an item).
        secret: never repeat the value in a message (a token).
        key: "section.name" when the config file names the field otherwise than by its record.
        doc: one line saying what it does, for people reading the declarations.
    """
    meta = {"min": min, "max": max, "above": above, "key": key, "doc": doc, "empty": empty,
            "secret": secret,
            "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_default(f: dataclasses.Field) -> Any:
    """The value a field takes when it is not given."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def setting_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a dataclass (annotations may be strings)."""
    return typing.get_type_hints(cls)


def check_setting(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    """The value as the field holds it (an int for a float field becomes a float).

    Raises ValueError with what the field should be, phrased to follow "should be".
    """
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list):
            raise ValueError(f"a list of {_noun(item)}s")
        try:
            return [_scalar(f, item, v) for v in value]
        except ValueError as exc:
            raise ValueError(f"a list of {_noun(item)}s ({exc} each)") from None
    if origin in (typing.Union, types.UnionType):  # X | None: TOML has no null, so X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return _scalar(f, hint, value)


def _scalar(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    meta = f.metadata
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError("true or false")
        return value
    if hint is str:
        choices, empty = meta.get("choices"), meta.get("empty", True)
        if choices and value not in choices:
            raise ValueError(f"one of {', '.join(map(repr, choices))}")
        if not isinstance(value, str) or "\x00" in value or not (value or empty):
            raise ValueError(f"a {'' if empty else 'non-empty '}string without NUL characters")
        return value
    if hint in (int, float):
        whole = hint is int
        ok = isinstance(value, int) if whole else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or not math.isfinite(value) \
                or not _in_range(value, meta):
            raise ValueError(_range_text(meta, whole))
        return value if whole else float(value)
    return value  # a type this module does not know: passed as it is


def _in_range(value: float, meta: typing.Mapping) -> bool:
    low, high, above = meta.get("min", 0), meta.get("max"), meta.get("above")
    return ((low is None or value >= low) and (high is None or value <= high)
            and (above is None or value > above))


def _range_text(meta: typing.Mapping, whole: bool) -> str:
    noun = "a whole number" if whole else "a finite number"
    low, high, above = meta.get("min", 0), meta.get("max"), meta.get("above")
    if above is not None:
        return f"{noun} above {above}" + (f" and at most {high}" if high is not None else "")
    if low is not None and high is not None:
        return f"{noun} from {low} to {high}"
    if low is not None:
        return f"{noun}, {low} or more"
    return f"{noun}, at most {high}" if high is not None else noun


def _noun(hint: Any) -> str:
    return {bool: "boolean", str: "string", int: "whole number", float: "number"}.get(
        hint, getattr(hint, "__name__", "value"))


__all__ = ["check_setting", "setting", "setting_default", "setting_types"]
