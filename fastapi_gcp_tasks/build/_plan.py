"""Turning endpoint arguments into the HTTP request that hands the endpoint exactly those arguments.

A `RoutePlan` is computed once per route, when the route is registered: it refuses what cannot be
represented (forms, files, several methods, parameters read by dependencies), builds one pydantic model
that validates `.delay()` keywords with the endpoint's own field definitions, and precomputes the URL
template, header names and body serializer. `RoutePlan.build()` is then a pure function from keywords to
`HttpParts`, shared by every way of sending (immediate, buffered, outbox, scheduled).

How each part travels, and what cannot:

* path: percent-encoded; a value must match the route's convertor (`/` only in `{name:path}`), and the
  segments `.` and `..` are refused because URL normalisation would remove them;
* query: repeated keys for lists; `None` and empty lists are left out (refused when leaving them out
  would give the endpoint a different default);
* headers: one value per header (Cloud Tasks sends a map), visible ASCII without surrounding spaces;
* cookies: one `Cookie` header, values quoted and octal-escaped as Starlette unquotes them (Latin-1 only);
* body: JSON written by the endpoint's own pydantic serializers, embedded under the parameter names
  when FastAPI embeds them.

Unordered values (`set`, `frozenset`, at any depth of a body) are written in one canonical order, sorted,
so that the same arguments give the same bytes in every process (a `str` set's own order changes with
`PYTHONHASHSEED`); the endpoint still receives an equal set.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import params
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from fastapi_gcp_tasks.exception import (
    BadMethodError,
    MissingParamError,
    RouteDefinitionError,
    TaskArgumentError,
    UnknownParamError,
    UnrepresentableValueError,
    WrongTypeError,
)

__all__ = ["HttpParts", "RoutePlan"]

_SUPPORTED_METHODS = frozenset({"POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_DELIVERY_HEADER_PREFIXES = ("x-cloudtasks-", "x-cloudscheduler")
_RESERVED_HEADERS = frozenset({"host", "content-length", "content-type", "user-agent", "cookie", "authorization"})
_RESERVED_HEADER_PREFIXES = ("x-google-", "x-appengine-")
_HEADER_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?")
_COOKIE_SAFE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_ABSENT = object()


class _Kind(enum.Enum):
    PATH = "path"
    QUERY = "query"
    HEADER = "header"
    COOKIE = "cookie"
    BODY = "body"


@dataclasses.dataclass(frozen=True, slots=True)
class _Param:
    name: str
    kind: _Kind
    key: str
    """The name on the wire: the path placeholder, query key, header name, cookie name or body key."""
    field_info: FieldInfo
    pattern: re.Pattern[str] | None = None
    """Path only: what the route's convertor matches."""
    keep_slash: bool = False
    """Path only: `{name:path}` keeps `/` unencoded."""
    query_model_keys: tuple[tuple[str, str], ...] = ()
    """Query parameter models only: (field name, query key) of each field of the model."""

    @property
    def default(self) -> Any:
        if self.field_info.is_required():
            return _ABSENT
        return self.field_info.get_default(call_default_factory=True)


@dataclasses.dataclass(frozen=True, slots=True)
class HttpParts:
    """The parts of one HTTP request, before they are put in a Cloud Tasks or Cloud Scheduler message."""

    method: str
    path_and_query: str
    headers: dict[str, str]
    body: bytes | None


class RoutePlan:
    """Everything `.delay()` needs from one route, computed once when the route is registered."""

    def __init__(self, route: APIRoute) -> None:
        self.endpoint_name = getattr(route.endpoint, "__qualname__", None) or route.name
        self.method = _single_method(route)
        self._path_format = route.path_format
        self._params = _collect_params(route)
        self._by_name = {p.name: p for p in self._params}
        self._validator = _validator_model(route, self._params)
        body_params = [p for p in self._params if p.kind is _Kind.BODY]
        if body_params and self.method not in _BODY_METHODS:
            raise RouteDefinitionError(
                f"{self.endpoint_name}: a {self.method} task cannot carry a body "
                f"(body parameters: {', '.join(p.name for p in body_params)}); "
                "Cloud Tasks sends a body only with POST, PUT and PATCH"
            )
        self._body_params = tuple(body_params)
        self._embed_body = len(body_params) > 1 or any(getattr(p.field_info, "embed", False) for p in body_params)
        self._single_body_adapter: TypeAdapter[Any] | None = None
        if body_params and not self._embed_body:
            self._single_body_adapter = TypeAdapter(_annotated(body_params[0].field_info))
        self._simple_params = tuple(p for p in self._params if p.kind is not _Kind.BODY)
        self.param_names = frozenset(self._by_name)

    # --- building -----------------------------------------------------------------------------------

    def validate(self, values: Mapping[str, Any]) -> BaseModel:
        """Validate keywords with the endpoint's own field definitions; raise a `TaskArgumentError`."""
        try:
            return self._validator.model_validate(values)
        except ValidationError as exc:
            raise self._argument_error(exc) from None

    def build(self, values: Mapping[str, Any]) -> HttpParts:
        """The request under which FastAPI hands the endpoint exactly `values` (after validation)."""
        validated = self.validate(values)
        data = validated.__dict__
        path_values: dict[str, str] = {}
        query: list[tuple[str, str]] = []
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for param in self._simple_params:
            given = param.name in values
            value = data[param.name]
            if param.kind is _Kind.PATH:
                path_values[param.name] = self._path_value(param, value)
            elif param.query_model_keys:
                if given:
                    query.extend(self._query_model_items(param, value))
            elif not given:
                continue
            elif param.kind is _Kind.QUERY:
                query.extend((param.key, s) for s in self._wire_strings(param, value))
            elif param.kind is _Kind.HEADER:
                for s in self._wire_strings(param, value, single=True):
                    headers[param.key] = self._header_value(param, s)
            else:
                for s in self._wire_strings(param, value, single=True):
                    cookies.append(f"{param.key}={_cookie_value(param, s)}")
        path = self._path_format.format(**path_values) if path_values else self._path_format
        if query:
            path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        body = self._body(validated, values) if self._body_params else None
        if body is not None:
            headers["Content-Type"] = "application/json"
        return HttpParts(method=self.method, path_and_query=path, headers=headers, body=body)

    # --- parts --------------------------------------------------------------------------------------

    def _body(self, validated: BaseModel, values: Mapping[str, Any]) -> bytes | None:
        if self._single_body_adapter is not None:
            param = self._body_params[0]
            if param.name not in values:
                return None
            return self._single_body_adapter.dump_json(_canonical(validated.__dict__[param.name]), by_alias=True)
        include = {p.name for p in self._body_params if p.name in values or p.field_info.is_required()}
        if not include:
            return None
        canonical: BaseModel = _canonical(validated)
        return canonical.__pydantic_serializer__.to_json(canonical, include=include, by_alias=True)

    def _path_value(self, param: _Param, value: Any) -> str:
        (text,) = self._wire_strings(param, value, single=True, omit_ok=False)
        assert param.pattern is not None
        if param.pattern.fullmatch(text) is None or (not param.keep_slash and text in {".", ".."}):
            detail = (
                "it contains '/'; declare the path as {" + param.key + ":path} to accept slashes"
                if "/" in text and not param.keep_slash
                else f"the route's convertor matches only {param.pattern.pattern!r}"
            )
            raise UnrepresentableValueError(
                f"{self.endpoint_name}: path parameter {param.name!r}={text!r} cannot be sent: {detail}",
                param=param.name,
            )
        if param.keep_slash:
            if any(segment in {".", ".."} for segment in text.split("/")):
                raise UnrepresentableValueError(
                    f"{self.endpoint_name}: path parameter {param.name!r}={text!r} cannot be sent: "
                    "'.' and '..' segments are removed by URL normalisation",
                    param=param.name,
                )
            return quote(text, safe="/")
        return quote(text, safe="")

    def _wire_strings(self, param: _Param, value: Any, *, single: bool = False, omit_ok: bool = True) -> list[str]:
        """The strings that make FastAPI rebuild `value`; empty when the parameter is left out."""
        if value is None or (isinstance(value, (list, tuple, set, frozenset)) and not value):
            if omit_ok and self._omission_gives(param, value):
                return []
            raise UnrepresentableValueError(
                f"{self.endpoint_name}: {param.kind.value} parameter {param.name!r}={value!r} cannot be sent: "
                f"leaving it out would give the endpoint {_describe_default(param)}",
                param=param.name,
            )
        if isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
            if single and len(items) > 1:
                raise UnrepresentableValueError(
                    f"{self.endpoint_name}: {param.kind.value} parameter {param.name!r} has {len(items)} values; "
                    f"Cloud Tasks sends each {param.kind.value} once, so at most one value can be sent",
                    param=param.name,
                )
            texts = [_scalar_text(param, self.endpoint_name, self._json_item(param, item)) for item in items]
            return sorted(texts) if isinstance(value, (set, frozenset)) else texts
        return [_scalar_text(param, self.endpoint_name, self._json_item(param, value))]

    @staticmethod
    def _json_item(param: _Param, item: Any) -> Any:
        if isinstance(item, (str, int, float)) and not isinstance(item, enum.Enum):
            return item
        return _JSON_SCALAR.dump_python(item, mode="json")

    def _omission_gives(self, param: _Param, value: Any) -> bool:
        default = param.default
        return default is not _ABSENT and default == value

    def _header_value(self, param: _Param, text: str) -> str:
        if _HEADER_VALUE.fullmatch(text) is None:
            raise UnrepresentableValueError(
                f"{self.endpoint_name}: header parameter {param.name!r}={text!r} cannot be sent: header values "
                "must be visible ASCII without leading or trailing spaces; use a query or body parameter",
                param=param.name,
            )
        return text

    def _query_model_items(self, param: _Param, value: Any) -> list[tuple[str, str]]:
        dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else {}
        items: list[tuple[str, str]] = []
        for field_name, key in param.query_model_keys:
            item = dumped.get(field_name)
            values = item if isinstance(item, list) else [item]
            texts = [_scalar_text(param, self.endpoint_name, v) for v in values if v is not None]
            if isinstance(getattr(value, field_name, None), (set, frozenset)):
                texts.sort()
            items.extend((key, text) for text in texts)
        return items

    def _argument_error(self, exc: ValidationError) -> TaskArgumentError:
        errors = exc.errors(include_url=False)
        first = errors[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        where = f"{self.endpoint_name}.delay()"
        if first["type"] == "missing":
            missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
            return MissingParamError(
                f"{where}: missing required argument(s): {', '.join(repr(m) for m in missing)}", param=name
            )
        if first["type"] == "extra_forbidden":
            unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
            return UnknownParamError(
                f"{where}: unexpected keyword argument(s) {', '.join(repr(u) for u in unknown)}; "
                f"the endpoint accepts: {', '.join(sorted(self.param_names)) or 'no arguments'}",
                param=name,
            )
        details = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']} (got {_short(e.get('input'))})" for e in errors
        )
        return WrongTypeError(f"{where}: invalid value for parameter {name!r}: {details}", field=name)


_JSON_SCALAR: TypeAdapter[Any] = TypeAdapter(Any)


class _SortedSet(set):  # type: ignore[type-arg]
    """A set that iterates in sorted order: how a body's sets are written (see `_canonical`)."""

    __slots__ = ()

    def __iter__(self) -> Any:
        return iter(sorted(set.__iter__(self), key=_sort_key))


class _SortedFrozenSet(frozenset):  # type: ignore[type-arg]
    """A frozenset that iterates in sorted order."""

    __slots__ = ()

    def __iter__(self) -> Any:
        return iter(sorted(frozenset.__iter__(self), key=_sort_key))


def _sort_key(item: Any) -> tuple[int, Any]:
    """A total, process-independent order: numbers, then strings, then bytes, then anything by its JSON."""
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return (1, item)
    if isinstance(item, str):
        return (2, item)
    if isinstance(item, bytes):
        return (3, item)
    return (4, _JSON_SCALAR.dump_json(_canonical(item), fallback=repr))


def _canonical(value: Any) -> Any:
    """`value` with every set and frozenset, at any depth, replaced by one iterating in sorted order.

    The serializers write a set in its iteration order, which for strings changes with the hash seed. The
    given objects are never changed: containers and models holding a set are copied.
    """
    if isinstance(value, (str, bytes, int, float, type(None), enum.Enum)):
        return value
    if isinstance(value, set):
        return _SortedSet(_canonical(item) for item in set.__iter__(value))
    if isinstance(value, frozenset):
        return _SortedFrozenSet(_canonical(item) for item in frozenset.__iter__(value))
    if isinstance(value, BaseModel):
        changed = {k: c for k, v in value.__dict__.items() if (c := _canonical(v)) is not v}
        return value.model_copy(update=changed) if changed else value
    if type(value) is dict:
        pairs = {k: _canonical(v) for k, v in value.items()}
        return pairs if any(pairs[k] is not value[k] for k in value) else value
    if type(value) in (list, tuple):
        items = [_canonical(item) for item in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if type(value) is list else tuple(items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {
            f.name: c
            for f in dataclasses.fields(value)
            if (c := _canonical(getattr(value, f.name, None))) is not getattr(value, f.name, None)
        }
        if not changed:
            return value
        duplicate = copy.copy(value)
        for name, item in changed.items():
            object.__setattr__(duplicate, name, item)
        return duplicate
    return value


def _scalar_text(param: _Param, endpoint: str, item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, str):
        return item
    if isinstance(item, (int, float)):
        return repr(item)
    raise UnrepresentableValueError(
        f"{endpoint}: {param.kind.value} parameter {param.name!r} holds a {type(item).__name__}, "
        "which cannot travel as text; use a body parameter",
        param=param.name,
    )


def _cookie_value(param: _Param, text: str) -> str:
    if _COOKIE_SAFE.fullmatch(text) is not None:
        return text
    out = ['"']
    for char in text:
        code = ord(char)
        if code > 0xFF:
            raise UnrepresentableValueError(
                f"cookie parameter {param.name!r} holds {char!r}: cookie values are limited to Latin-1",
                param=param.name,
            )
        out.append(char if _COOKIE_SAFE.fullmatch(char) else f"\\{code:03o}")
    out.append('"')
    return "".join(out)


def _describe_default(param: _Param) -> str:
    default = param.default
    return "an error (the parameter is required)" if default is _ABSENT else f"its default {default!r}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- registration-time analysis ------------------------------------------------------------------------


def _single_method(route: APIRoute) -> str:
    methods = sorted(route.methods or ())
    if not methods:
        raise BadMethodError(f"{route.path}: a task route needs exactly one HTTP method; it has none")
    if len(methods) > 1:
        raise BadMethodError(f"{route.path}: a task route needs exactly one HTTP method; it has {', '.join(methods)}")
    if methods[0] not in _SUPPORTED_METHODS:
        raise BadMethodError(f"{route.path}: Cloud Tasks cannot send {methods[0]} requests")
    return methods[0]


def _annotated(field_info: FieldInfo) -> Any:
    if field_info.metadata:
        return Annotated[(field_info.annotation, *field_info.metadata)]
    return field_info.annotation


def _wire_key(field: Any, kind: _Kind) -> str:
    info: FieldInfo = field.field_info
    alias = info.validation_alias if isinstance(info.validation_alias, str) else None
    alias = alias or info.alias or field.name
    if kind is _Kind.HEADER and alias == field.name and getattr(info, "convert_underscores", True):
        alias = alias.replace("_", "-")
    return str(alias)


def _collect_params(route: APIRoute) -> list[_Param]:
    dependant = route.dependant
    where = getattr(route.endpoint, "__qualname__", None) or route.path
    for sub in dependant.dependencies:
        if sub.body_params:
            raise RouteDefinitionError(
                f"{where}: a dependency reads the request body ({', '.join(f.name for f in sub.body_params)}); "
                "a task cannot fill it from .delay() arguments"
            )
    found: list[_Param] = []
    convertors = route.param_convertors
    for field in dependant.path_params:
        convertor = convertors.get(field.name)
        regex = getattr(convertor, "regex", "[^/]+")
        found.append(
            _Param(
                name=field.name,
                kind=_Kind.PATH,
                key=field.name,
                field_info=field.field_info,
                pattern=re.compile(regex),
                keep_slash=type(convertor).__name__ == "PathConvertor",
            )
        )
    for field in dependant.query_params:
        model = _param_model(field.field_info)
        keys: tuple[tuple[str, str], ...] = ()
        if model is not None:
            keys = tuple((name, str(f.alias or name)) for name, f in model.model_fields.items())
        found.append(
            _Param(
                name=field.name,
                kind=_Kind.QUERY,
                key=_wire_key(field, _Kind.QUERY),
                field_info=field.field_info,
                query_model_keys=keys,
            )
        )
    for kind, fields in ((_Kind.HEADER, dependant.header_params), (_Kind.COOKIE, dependant.cookie_params)):
        for field in fields:
            if _param_model(field.field_info) is not None:
                raise RouteDefinitionError(
                    f"{where}: {kind.value} parameter models ({field.name!r}) are not supported in tasks; "
                    "declare the fields as separate parameters"
                )
            key = _wire_key(field, kind)
            lowered = key.lower()
            if kind is _Kind.HEADER and lowered.startswith(_DELIVERY_HEADER_PREFIXES):
                continue  # filled in by Cloud Tasks / Cloud Scheduler on delivery, never by the caller
            if kind is _Kind.HEADER and (lowered in _RESERVED_HEADERS or lowered.startswith(_RESERVED_HEADER_PREFIXES)):
                raise RouteDefinitionError(
                    f"{where}: header parameter {field.name!r} ({key}) is set or overwritten by Cloud Tasks "
                    "and cannot carry a task argument"
                )
            found.append(_Param(name=field.name, kind=kind, key=key, field_info=field.field_info))
    for field in dependant.body_params:
        info = field.field_info
        if isinstance(info, (params.Form, params.File)):
            raise RouteDefinitionError(
                f"{where}: form and file parameters ({field.name!r}) cannot be sent as a task; "
                "use a JSON body (a pydantic model) instead"
            )
        found.append(_Param(name=field.name, kind=_Kind.BODY, key=_wire_key(field, _Kind.BODY), field_info=info))
    return found


def _param_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _validator_model(route: APIRoute, found: Sequence[_Param]) -> type[BaseModel]:
    """One pydantic model validating `.delay()` keywords (by Python name) like the endpoint would."""
    definitions: dict[str, Any] = {}
    for param in found:
        info = param.field_info
        kwargs: dict[str, Any] = {}
        if param.kind is _Kind.BODY:
            kwargs["serialization_alias"] = param.key
        if info.is_required():
            default: Any = PydanticUndefined
        elif info.default_factory is not None:
            kwargs["default_factory"] = info.default_factory
            default = PydanticUndefined
        else:
            default = info.default
        definitions[param.name] = (_annotated(info), Field(default, **kwargs))
    model_name = f"DelayArgs_{route.unique_id}"
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    model: type[BaseModel] = create_model(model_name, __config__=config, **definitions)
    return model
