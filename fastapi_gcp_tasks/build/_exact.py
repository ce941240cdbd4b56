"""Exactly or refused: proving at registration that a type survives the trip, comparing values otherwise.

A value survives the trip when what is put on the wire, parsed back by the endpoint's own input validation,
equals the validated value. `proof_gap()` decides once per parameter, from its type alone, whether that
always holds (then `.delay()` skips the check); `difference()` is the per-call comparison used for every
other type. Equality here is stricter than `==`: types must match (`1` is not `True`, an `int` is not a
`str`), a model must arrive with the same fields set, an aware datetime with the same instant and offset.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import math
import types
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic.fields import FieldInfo

__all__ = ["difference", "holds_sets", "proof_gap"]

_TEXT_EXACT = (str, int, float, bool, uuid.UUID, decimal.Decimal)
"""Types whose text form parses back to an equal value in every query, header, cookie and path."""
_JSON_EXACT = (str, int, float, bool, uuid.UUID, decimal.Decimal, type(None))
_SEQUENCES = (list, set, frozenset, tuple)


def proof_gap(annotation: Any, metadata: list[Any], *, text: bool) -> str | None:
    """None when every valid value of this type comes back equal; otherwise what stands in the way.

    `text` is true for query, header, cookie and path values (parsed from strings), false for JSON bodies.
    The proof is conservative: whatever it cannot see through (validators, strict mode, unions, custom
    serializers, `Any`) is checked per call instead.
    """
    return _annotated_gap(annotation, metadata, text, set())


def _gap(annotation: Any, *, text: bool, seen: set[type]) -> str | None:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *metadata = get_args(annotation)
        return _annotated_gap(inner, metadata, text, seen)
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return _gap(members[0], text=text, seen=seen)
        return "it is a union, whose member is chosen again from the parsed form"
    if origin is Literal:
        allowed = (str,) if text else (str, int, bool)
        if all(type(arg) in allowed for arg in get_args(annotation)):
            return None
        return "its literal values are not all strings"
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        args = get_args(annotation)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return "it is a fixed-length tuple"
        return _gap(args[0], text=text, seen=seen) if args else "its items are untyped"
    if not text and (origin is dict or annotation is dict):
        args = get_args(annotation)
        if len(args) != 2 or args[0] is not str:
            return "it is a mapping whose keys are not str"
        return _gap(args[1], text=text, seen=seen)
    if not isinstance(annotation, type):
        return f"its type {annotation!r} is not one the proof knows"
    if issubclass(annotation, enum.Enum):
        values = [member.value for member in annotation]
        if all(type(value) is str for value in values) or (not text and all(type(value) is int for value in values)):
            return None
        return "its enum values are not all strings"
    if issubclass(annotation, (dt.datetime, dt.time, dt.timedelta)):
        return "date-times keep their instant, but their zone and offset need checking"
    if issubclass(annotation, dt.date):
        return None
    if issubclass(annotation, BaseModel):
        if text:
            return "a model cannot travel as text"
        return None if annotation in seen else _model_gap(annotation, seen)
    if issubclass(annotation, bool) or annotation in (_TEXT_EXACT if text else _JSON_EXACT):
        return None
    return f"the proof does not cover {annotation.__name__}"


def _annotated_gap(inner: Any, metadata: list[Any], text: bool, seen: set[type]) -> str | None:
    """Constraints (bounds, lengths, patterns) only accept or refuse, so a value that passed them once
    passes them again; anything else in the metadata (validators, strict mode) may not."""
    for item in metadata:
        if not isinstance(item, annotated_types.BaseMetadata) or getattr(item, "strict", None):
            return f"it is annotated with {type(item).__name__}"
    return _gap(inner, text=text, seen=seen)


def _model_gap(model: type[BaseModel], seen: set[type]) -> str | None:
    """Models written by pydantic's serializer read back the same when input and output sides agree."""
    config = model.model_config
    name = model.__name__
    if config.get("strict"):
        return f"{name} is strict: JSON strings do not validate as its typed fields"
    if config.get("extra") == "allow":
        return f"{name} keeps extra fields of any type"
    if model.__pydantic_computed_fields__:
        return f"{name} has computed fields, written on output only"
    decorators = model.__pydantic_decorators__
    if decorators.validators or decorators.field_validators or decorators.model_validators:
        return f"{name} has validators, which may change a value validated twice"
    if decorators.field_serializers or decorators.model_serializers:
        return f"{name} has custom serializers"
    seen = seen | {model}
    for field_name, info in model.model_fields.items():
        gap = _field_gap(field_name, info, config)
        if gap is None:
            gap = _annotated_gap(info.annotation, info.metadata, False, seen)
        if gap is not None:
            return f"{name}.{field_name}: {gap}"
    return None


def _field_gap(field_name: str, info: FieldInfo, config: Mapping[str, Any]) -> str | None:
    if info.exclude:
        return "it is excluded from output"
    if info.default_factory is not None:
        return "its default comes from a factory"
    if info.validation_alias not in (None, info.alias) or info.serialization_alias not in (None, info.alias):
        return "it is read and written under different names"
    if config.get("validate_by_alias") is False and info.alias:
        return "it is written under its alias but read under its name"
    return None


def holds_sets(annotation: Any, seen: frozenset[type] = frozenset()) -> bool:
    """Whether values of a proven type can hold a set (which must be written in a canonical order)."""
    origin = get_origin(annotation)
    if annotation in (set, frozenset) or origin in (set, frozenset):
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return False
        return any(holds_sets(info.annotation, seen | {annotation}) for info in annotation.model_fields.values())
    return any(holds_sets(arg, seen) for arg in get_args(annotation) if arg is not Ellipsis)


# --- per-call comparison -----------------------------------------------------------------------------

_PLAIN = frozenset({str, int, bool, bytes, uuid.UUID, dt.date})
"""Types whose `==` is exact once the types match."""


def difference(sent: Any, received: Any, where: str = "") -> str | None:
    """None when `received` is exactly `sent`; otherwise where and how they differ, for an error message."""
    if sent is None or received is None:
        return None if sent is received else _changed(where, received)
    kind = type(sent)
    if kind is not type(received):
        return _changed(where, received, note=f"a {type(received).__name__}, not a {kind.__name__}")
    if kind in _PLAIN:
        return None if sent == received else _changed(where, received)
    if isinstance(sent, BaseModel):
        if sent.model_fields_set | _factory_fields(type(sent)) != received.model_fields_set:
            return f"{where or 'the value'} would arrive with fields set {sorted(received.model_fields_set)}"
        for name, item in sent.__dict__.items():
            found = difference(item, received.__dict__.get(name), f"{where}.{name}" if where else name)
            if found:
                return found
        return difference(sent.__pydantic_extra__ or None, received.__pydantic_extra__ or None, where)
    if isinstance(sent, dict):
        if list(map(_key, sent)) != list(map(_key, received)) and set(map(_key, sent)) != set(map(_key, received)):
            return _changed(where, received)
        for key, item in sent.items():
            found = difference(item, received.get(key), f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(sent, (list, tuple)):
        if len(sent) != len(received):
            return _changed(where, received)
        for index, (a, b) in enumerate(zip(sent, received, strict=True)):
            found = difference(a, b, f"{where}[{index}]")
            if found:
                return found
        return None
    if isinstance(sent, float):
        return None if sent == received or (math.isnan(sent) and math.isnan(received)) else _changed(where, received)
    if isinstance(sent, decimal.Decimal):
        same = sent == received or (sent.is_nan() and received.is_nan())
        return None if same and str(sent) == str(received) else _changed(where, received)
    if isinstance(sent, (dt.datetime, dt.time)):
        if sent == received and sent.utcoffset() == received.utcoffset() and _aware(sent) == _aware(received):
            return None
        if (
            isinstance(sent, dt.datetime)
            and _aware(sent)
            and _aware(received)
            and sent.astimezone(dt.UTC) == received.astimezone(dt.UTC)
            and sent.utcoffset() == received.utcoffset()
        ):
            return None
        return _changed(where, received)
    if dataclasses.is_dataclass(sent):
        for field in dataclasses.fields(sent):
            path = f"{where}.{field.name}" if where else field.name
            found = difference(getattr(sent, field.name, None), getattr(received, field.name, None), path)
            if found:
                return found
        return None
    if isinstance(sent, (SecretStr, SecretBytes)):
        return None if sent.get_secret_value() == received.get_secret_value() else _changed(where, "a different secret")
    if isinstance(sent, enum.Enum):
        return None if sent is received else _changed(where, received)
    try:
        equal = bool(sent == received)
    except Exception:  # noqa: BLE001 - a user type's __eq__ may raise
        equal = False
    return None if equal else _changed(where, received)


@functools.cache
def _factory_fields(model: type[BaseModel]) -> frozenset[str]:
    """Fields a `default_factory` fills: written with the caller's value, so they arrive set."""
    return frozenset(name for name, info in model.model_fields.items() if info.default_factory is not None)


def _key(key: Any) -> tuple[type, Any]:
    return (type(key), key)


def _aware(value: dt.datetime | dt.time) -> bool:
    return value.utcoffset() is not None


def _changed(where: str, received: Any, note: str = "") -> str:
    text = repr(received)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{where or 'the value'} would arrive as {text}" + (f" ({note})" if note else "")
