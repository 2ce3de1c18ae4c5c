"""Strict JSON round-trip for the project's dataclass records (evaluation, training settings).

`record_from_dict(cls, data, source)` rebuilds a dataclass from the plain JSON its `asdict` gave,
checking every value against the field's type hint: an unknown key, a missing key or a value of
the wrong kind raises `RecordError` naming the source file, the path to the value and what was
expected. Two allowances, so a record written before a later version added a field still reads:
a field whose default is None (an optional section) may be absent, and so may a field marked
`ABSENT_MEANS_DEFAULT` (a setting made configurable later, whose default is the value every
earlier record was made with): it reads as that default.

Supported hints: dataclasses, `list[X]`, `tuple[X, ...]`, `dict[str, X]`, `X | None`, int, float,
bool, str.

`strict_json(value)` is how the project writes every JSON file (records, reports, backtests,
promotion records): standard JSON only (`allow_nan=False`), with each non-finite float written as
null. Python's default would write `NaN` / `Infinity`, which no strict JSON reader accepts. A
float field read back as null becomes NaN, so a non-finite figure stays non-finite and is shown
as "n/a (non-finite)" (`format_figure`), never as a number.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, TypeVar

RecordT = TypeVar("RecordT")


class RecordError(ValueError):
    """A stored record that does not match its dataclass."""


def _fail(source: str, where: str, expected: str, value: object) -> RecordError:
    return RecordError(f"{source}: {where or 'record'}: expected {expected}, got {value!r:.80}")


NON_FINITE = "n/a (non-finite)"


def _finite_or_null(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def strict_json(value: object, **kwargs: Any) -> str:
    """Standard JSON of `value` (keyword arguments as json.dumps'), non-finite floats as null."""
    return json.dumps(_finite_or_null(value), allow_nan=False, **kwargs)


def is_finite_number(value: object) -> bool:
    """True for a finite int or float; False for NaN, ±inf, None (a non-finite figure read back)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def format_figure(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`, or NON_FINITE when it is NaN, ±inf or missing (null)."""
    if not is_finite_number(value):
        return NON_FINITE
    return format(value, spec)


def _decode(hint: Any, value: object, source: str, where: str) -> object:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
        if value is None:
            return None
        (inner,) = arguments  # only `X | None` is used by the records
        return _decode(inner, value, source, where)
    if dataclasses.is_dataclass(hint):
        return record_from_dict(hint, value, source, where)
    if origin in (list, tuple):  # a tuple is `tuple[X, ...]`, written as a JSON list
        if not isinstance(value, list | tuple):  # a tuple: `asdict`'s, before any JSON
            raise _fail(source, where, "a list", value)
        item = typing.get_args(hint)[0]
        return origin(_decode(item, v, source, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise _fail(source, where, "an object with string keys", value)
        _, item = typing.get_args(hint)
        return {k: _decode(item, v, source, f"{where}.{k}") for k, v in value.items()}
    if hint is float:
        if value is None:  # strict_json writes a non-finite float as null
            return math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(source, where, "a number", value)
        return value
    if hint in (int, bool, str):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise _fail(source, where, hint.__name__, value)
        return value
    raise TypeError(f"{where}: type hint {hint!r} is not supported by record_from_dict")


# Field metadata: an absent value reads as the field's default (see the module's note).
ABSENT_MEANS_DEFAULT = {"absent_means_default": True}


def record_from_dict(cls: type[RecordT], data: object, source: str, where: str = "") -> RecordT:
    """`cls` rebuilt from `data`; RecordError on unknown, missing or mistyped values."""
    if not isinstance(data, dict):
        raise _fail(source, where, f"an object ({cls.__name__})", data)
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecordError(
            f"{source}: {where or cls.__name__}: unknown key(s) {unknown}; "
            f"{cls.__name__} has {sorted(fields)}"
        )
    optional = {
        name
        for name, field in fields.items()
        if field.default is None or field.metadata.get("absent_means_default")
    }
    missing = sorted(set(fields) - set(data) - optional)
    if missing:
        raise RecordError(f"{source}: {where or cls.__name__}: missing key(s) {missing}")
    prefix = f"{where}." if where else ""
    values = {
        name: _decode(hints[name], value, source, f"{prefix}{name}") for name, value in data.items()
    }
    try:
        return cls(**values)
    except ValueError as error:  # the record's own validation (e.g. TrainConfig's)
        raise RecordError(f"{source}: {where or cls.__name__}: {error}") from error
