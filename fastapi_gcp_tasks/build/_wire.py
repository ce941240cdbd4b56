"""Writing validated values in the form the endpoint's *input* side reads them.

`model_dump()` writes a model from its output side: serialization aliases, `exclude=True` fields left out,
computed fields added, secrets masked, custom serializers applied, every default written. The endpoint reads
its arguments with the input side, so a task written that way can arrive changed or be refused by the worker
forever. `input_form()` writes instead what a client would have to send: validation aliases, the fields the
caller set (and those a `default_factory` filled in, whose values the caller holds), secrets in clear, sets
in one canonical order.
"""

from __future__ import annotations

import dataclasses
import decimal
import enum
import functools
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import AliasChoices, AliasPath, BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

__all__ = [
    "HEADER_NAME",
    "HEADER_VALUE",
    "Unwritable",
    "input_form",
    "input_key",
    "json_bytes",
    "scalar_text",
    "sort_key",
]

HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (RFC 9110 token)."""
HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?")
"""A header value that arrives unchanged: visible ASCII, inner spaces and tabs, nothing to trim at either
end (HTTP parsers strip it), nothing outside ASCII (servers decode header bytes as Latin-1)."""

_MAX_INT_DIGITS = 4300
"""Python's default limit on int <-> str conversion (`sys.get_int_max_str_digits()`); Starlette's JSON
parser and pydantic's text parsing refuse longer numbers, so they cannot travel."""
_INT_LIMIT = 10**_MAX_INT_DIGITS


class Unwritable(Exception):  # noqa: N818 - internal signal, always turned into a library error
    """A value the input side cannot be given; `reason` says why, `where` is the path inside the value."""

    def __init__(self, reason: str, where: tuple[str | int, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where


def input_key(name: str, info: FieldInfo, config: Mapping[str, Any]) -> str:
    """The key under which a model field is read: its validation alias, its alias, or its name."""
    if config.get("validate_by_alias", True) is False:
        return name
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        alias = next((choice for choice in alias.choices if isinstance(choice, str)), None)
    if isinstance(alias, AliasPath):
        alias = alias.path[0] if len(alias.path) == 1 and isinstance(alias.path[0], str) else None
        if alias is None:
            raise Unwritable(f"field {name!r} is read through a nested alias path, which a task cannot write")
    if isinstance(alias, str):
        return alias
    return info.alias or name


def input_form(value: Any, where: tuple[str | int, ...] = ()) -> Any:
    """`value` as JSON-compatible data that the endpoint's validation turns back into an equal value."""
    if value is None or type(value) is bool:
        return value
    if isinstance(value, enum.Enum):  # before str and int: `class Color(str, Enum)` is a str
        return input_form(value.value, where)
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int):
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise Unwritable(f"an integer of more than {_MAX_INT_DIGITS} digits cannot be parsed back", where)
        return bool(value) if isinstance(value, bool) else int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, BaseModel):
        return _model_form(value, where)
    if isinstance(value, (SecretStr, SecretBytes)):
        return input_form(value.get_secret_value(), where)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise Unwritable("bytes that are not UTF-8 cannot travel as JSON text", where) from None
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            written_key = input_form(key, where)
            if isinstance(written_key, bool) or not isinstance(written_key, (str, int, float)):
                raise Unwritable(f"a mapping key {key!r} cannot be a JSON object key", where)
            out[str(written_key) if not isinstance(written_key, str) else written_key] = input_form(
                item, (*where, str(key))
            )
        return out
    if isinstance(value, (set, frozenset)):
        items = [input_form(item, (*where, i)) for i, item in enumerate(value)]
        return sorted(items, key=sort_key)
    if isinstance(value, (list, tuple)):
        return [input_form(item, (*where, i)) for i, item in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = getattr(type(value), "__pydantic_fields__", None)
        config = getattr(type(value), "__pydantic_config__", None) or {}
        written: dict[str, Any] = {}
        for field in dataclasses.fields(value):
            if not field.init:
                continue
            key = input_key(field.name, fields[field.name], config) if fields else field.name
            written[key] = input_form(getattr(value, field.name), (*where, field.name))
        return written
    try:
        return to_jsonable_python(value)
    except Exception:  # noqa: BLE001 - pydantic raises several types for values it cannot write
        raise Unwritable(f"a {type(value).__name__} has no JSON form", where) from None


def _model_form(model: BaseModel, where: tuple[str | int, ...]) -> dict[str, Any]:
    keys, factory_filled = _model_keys(type(model))
    written_names = model.model_fields_set | factory_filled if factory_filled else model.model_fields_set
    values = model.__dict__
    out: dict[str, Any] = {}
    for name, key in keys:
        if name in written_names:
            out[key] = input_form(values[name], (*where, name))
    extra = model.__pydantic_extra__
    if extra:
        for key, item in extra.items():
            out[key] = input_form(item, (*where, key))
    return out


@functools.cache
def _model_keys(model: type[BaseModel]) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
    """Each field of a model with the key it is read under, and the fields a `default_factory` fills."""
    fields = model.model_fields
    keys = tuple((name, input_key(name, info, model.model_config)) for name, info in fields.items())
    return keys, frozenset(name for name, info in fields.items() if info.default_factory is not None)


def json_bytes(data: Any) -> bytes:
    """JSON as Starlette's `request.json()` reads it back (non-finite floats as `NaN` / `Infinity`)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=True).encode("utf-8")


def scalar_text(item: Any) -> str:
    """The text of one query, header, cookie or path value, given its `input_form`."""
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, str):
        return item
    if isinstance(item, int):
        return str(item)
    if isinstance(item, float):
        text = repr(item)
        if "e" in text and math.isfinite(item):
            # Starlette's `{x:float}` convertor matches digits only: write the same float positionally.
            text = format(decimal.Decimal(text), "f")
        return text
    raise Unwritable(f"a {type(item).__name__} cannot travel as text; use a body parameter")


def sort_key(item: Any) -> tuple[int, Any]:
    """A total, process-independent order: numbers, then strings, then anything by its JSON."""
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return (1, item)
    if isinstance(item, str):
        return (2, item)
    return (3, json.dumps(item, sort_keys=True, default=repr))
