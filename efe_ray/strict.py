"""Strict dataclass configs: a rule per field, checked on construction, and building from dicts.

A field declares its rule where it is declared (``bounded``, ``matching``, or any object with
``check(key, value)`` under the ``"rule"`` metadata key); :class:`Checked` runs every rule, then the
class's own :meth:`Checked.check` for rules that tie fields together, whenever an instance is made
(directly, by ``dataclasses.replace`` or by :func:`from_dict`). :func:`from_dict` adds what only a
dict can get wrong: unknown keys (with a "did you mean" hint) and wrong types, and prefixes every
message with the key path (``learner.agent_lr: must be > 0 and <= 1, got -1.0``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Bounds", "Checked", "ConfigError", "Pattern", "Searched", "bounded", "from_dict", "matching", "merge",
           "rule", "searched", "to_dict"]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names the key path and the value."""


@dataclass(frozen=True)
class Bounds:
    """Inclusive ``low``/``high`` limits (``low_open`` / ``high_open``: that limit itself excluded);
    ``None``: no limit."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def check(self, key: str, value: Any) -> None:
        """Raise ConfigError naming ``key`` and ``value`` when ``value`` is out of bounds."""
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise ConfigError(f"{key}: must be {self}, got {value!r}")

    def __str__(self) -> str:
        parts = [] if self.low is None else [f"{'>' if self.low_open else '>='} {self.low:g}"]
        return " and ".join(parts + ([] if self.high is None else [f"{'<' if self.high_open else '<='} {self.high:g}"]))


@dataclass(frozen=True)
class Pattern:
    """The whole string must match ``regex``; ``what`` describes the accepted values in messages."""

    regex: str
    what: str

    def check(self, key: str, value: Any) -> None:
        """Raise ConfigError naming ``key`` and ``value`` when ``value`` does not match."""
        if not isinstance(value, str) or not re.fullmatch(self.regex, value):
            raise ConfigError(f"{key}: expected {self.what}, got {value!r}")


def bounded(default: Any, low: float | None = None, high: float | None = None, *, low_open: bool = False,
            high_open: bool = False) -> Any:
    """A number field with its bounds (inclusive unless ``low_open`` / ``high_open``)."""
    return field(default=default, metadata={"rule": Bounds(low, high, low_open, high_open)})


def matching(default: str, regex: str, what: str) -> Any:
    """A string field whose whole value must match ``regex``."""
    return field(default=default, metadata={"rule": Pattern(regex, what)})


@dataclass
class Checked:
    """Base of every config dataclass: each field's rule, then :meth:`check`, on construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "rule" in f.metadata:
                f.metadata["rule"].check(f.name, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Rules that tie fields together; raise ConfigError naming the field (none by default)."""


def rule(cls: type, name: str) -> Any:
    """The rule declared for field ``name`` of config class ``cls``."""
    return next(f.metadata["rule"] for f in dataclasses.fields(cls) if f.name == name)


@dataclass(frozen=True)
class Searched:
    """A search dimension for field ``fills`` of config class ``of`` (``learner``): a ``[low, high]``
    range or choices."""

    of: type
    fills: str
    kind: Literal["range", "choices"]

    def check(self, key: str, value: tuple) -> None:
        """Each value obeys the bounds of the field it fills; a range has low <= high."""
        if not value:
            raise ConfigError(f"{key}: expected at least one value, got {list(value)!r}")
        for i, v in enumerate(value):
            rule(self.of, self.fills).check(f"{key}[{i}] (fills learner.{self.fills})", v)
        if self.kind == "range" and (len(value) != 2 or value[0] > value[1]):
            raise ConfigError(f"{key}: expected [low, high] with low <= high, got {list(value)!r}")


def searched(default: tuple, of: type, fills: str, kind: Literal["range", "choices"]) -> Any:
    """A search dimension field (see :class:`Searched`)."""
    return field(default=default, metadata={"rule": Searched(of, fills, kind)})


def from_dict(cls: type, data: dict[str, Any] | None, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys, wrong types and bad values."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(names)})"
            raise ConfigError(f"unknown config key '{_join(path, key)}'{hint}")
    kwargs = {name: _coerce(hints[name], data[name], _join(path, name)) for name in names if name in data}
    try:
        return cls(**kwargs)
    except ConfigError as err:  # field rules and check() name keys relative to ``cls``
        raise ConfigError(_join(path, str(err))) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain-dict (YAML/JSON-safe) copy of a config."""
    return _listify(dataclasses.asdict(cfg))


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``override`` into a copy of ``base`` (dotted keys allowed in override)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if "." in key:
            head, rest = key.split(".", 1)
            out[head] = merge(out.get(head, {}) or {}, {rest: value})
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _listify(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    return x


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true/false"), int: ((int,), "an integer"), float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` (ints become floats where a float is expected)."""
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, allowed))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(f"{key}: expected a non-empty list, got {value!r}")
        args = typing.get_args(hint)
        if not (len(args) == 2 and args[1] is Ellipsis) and len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType) or hint not in _SCALARS:
        raise ConfigError(f"{key}: unsupported type {hint!r}")  # not used by our configs
    accepted, what = _SCALARS[hint]
    if not isinstance(value, accepted) or (hint is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    return float(value) if hint is float else value
