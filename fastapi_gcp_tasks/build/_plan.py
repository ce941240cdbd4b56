"""Turning endpoint arguments into the HTTP request that hands the endpoint exactly those arguments.

A `RoutePlan` is computed once per route: it refuses what cannot be represented (forms, files, several
methods, parameters read by dependencies), builds one pydantic model that validates `.delay()` keywords
with the endpoint's own field definitions, and decides for each parameter whether its type is proven to
survive the trip (`_exact.proof_gap`). `RoutePlan.build()` is then a pure function from keywords to
`HttpParts`, shared by every way of sending (immediate, buffered, outbox, scheduled).

Exactly or refused: each value is written from the endpoint's input side (`_wire.input_form`), and unless
its type is proven, the written form is parsed back the way FastAPI parses it (Starlette's query, header,
cookie and path parsing, then the endpoint's own field) and compared with the validated value
(`_exact.difference`). A value that would not come back equal is refused with `UnrepresentableValueError`
naming the parameter; nothing is ever delivered changed or sent to be refused by the worker.

How each part travels, and what cannot:

* path: percent-encoded; a value must match the route's convertor (`/` only in `{name:path}`), and the
  segments `.` and `..` are refused because URL normalisation would remove them;
* query: repeated keys for lists; `None` and empty lists are left out (refused when leaving them out
  would give the endpoint a different default);
* headers: one value per header (Cloud Tasks sends a map), visible ASCII without surrounding spaces;
* cookies: one `Cookie` header, values quoted and octal-escaped as Starlette unquotes them (Latin-1 only);
* body: JSON, embedded under the parameter names when FastAPI embeds them.

Unordered values (`set`, `frozenset`, at any depth) are written in one canonical order, sorted, so that
the same arguments give the same bytes in every process.

Forward references (`from __future__ import annotations` with a model defined later, or returned by an
app factory) are resolved as FastAPI resolves them, from the endpoint's module, at the first use when
registration was too early; a name still missing then is a `RouteDefinitionError` naming it.
"""

from __future__ import annotations

import collections.abc
import contextlib
import copy
import dataclasses
import enum
import json
import re
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import quote, urlsplit

from fastapi import params
from fastapi.dependencies.utils import get_dependant, request_params_to_args
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, PydanticUserError, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, from_json
from starlette.datastructures import Headers, QueryParams
from starlette.requests import cookie_parser

from fastapi_gcp_tasks.build import _exact, _wire
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
_COOKIE_SAFE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_ABSENT = object()
_FAST_BODY_LIMIT = 4300
"""A proven body longer than this may hold an integer too long for Starlette's JSON parser: check it."""


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
    field: Any
    """FastAPI's `ModelField` for this parameter: what the endpoint validates the received value with."""
    gap: str | None
    """Why the type is not proven to survive the trip (then each call is checked); None when proven."""
    convertor: Any = None
    """Path only: the route's Starlette convertor."""
    pattern: re.Pattern[str] | None = None
    """Path only: what the route's convertor matches."""
    keep_slash: bool = False
    """Path only: `{name:path}` keeps `/` unencoded."""
    query_model: bool = False
    """A query parameter model: each of its fields travels as its own query key."""

    @property
    def field_info(self) -> FieldInfo:
        info: FieldInfo = self.field.field_info
        return info

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


class _UnresolvedError(Exception):
    """A parameter's type still names something undefined (a forward reference)."""

    def __init__(self, param: str, missing: str) -> None:
        super().__init__(param, missing)
        self.param = param
        self.missing = missing


class RoutePlan:
    """Everything `.delay()` needs from one route, computed once (at registration, or at first use)."""

    def __init__(self, route: APIRoute) -> None:
        self.endpoint_name = getattr(route.endpoint, "__qualname__", None) or route.name
        self.method = _single_method(route)
        self.mount_prefix = ""
        """What stands in front of the route's own path in the app (outer router prefixes, mounts,
        root_path); found by `build._reach` when the app is known, empty until then."""
        self._urls: dict[tuple[str, str], str] = {}
        self._route = route
        self._path_format = route.path_format
        self._resolved = False
        with contextlib.suppress(_UnresolvedError):  # resolved at first use, when the names exist
            self._analyse(route.dependant)

    # --- analysis -----------------------------------------------------------------------------------

    def resolve(self) -> None:
        """Resolve forward references now; raise `RouteDefinitionError` naming what is still undefined.

        Called by the first `.delay()` / `.schedule()` and by `check_app()`.
        """
        if self._resolved:
            return
        route = self._route
        dependant = get_dependant(path=route.path_format, call=route.endpoint)
        try:
            self._analyse(dependant)
        except _UnresolvedError as unresolved:
            module = getattr(route.endpoint, "__module__", "?")
            raise RouteDefinitionError(
                f"{self.endpoint_name}: parameter {unresolved.param!r} refers to {unresolved.missing!r}, which is "
                f"not defined in module {module!r} where FastAPI looks it up; define it at module level "
                "(with `from __future__ import annotations`, a class defined inside a function is invisible "
                "to FastAPI too)"
            ) from None

    def _analyse(self, dependant: Any) -> None:
        found = _collect_params(self._route, dependant, self.endpoint_name)
        validator = _validator_model(self._route, found)
        body_params = [p for p in found if p.kind is _Kind.BODY]
        if body_params and self.method not in _BODY_METHODS:
            raise RouteDefinitionError(
                f"{self.endpoint_name}: a {self.method} task cannot carry a body "
                f"(body parameters: {', '.join(p.name for p in body_params)}); "
                "Cloud Tasks sends a body only with POST, PUT and PATCH"
            )
        self._params = tuple(found)
        self._by_name = {p.name: p for p in found}
        self._by_key = {p.key: p.name for p in found if p.key != p.name}
        self._validator = validator
        self._body_params = tuple(body_params)
        self._embed_body = len(body_params) > 1 or any(getattr(p.field_info, "embed", False) for p in body_params)
        self._body_proven = all(p.gap is None for p in body_params)
        self._body_sets = any(_exact.holds_sets(p.field_info.annotation) for p in body_params)
        self._single_body_adapter: TypeAdapter[Any] | None = None
        if body_params and not self._embed_body:
            self._single_body_adapter = TypeAdapter(_annotated(body_params[0].field_info))
        self._simple_params = tuple(p for p in found if p.kind is not _Kind.BODY)
        self._readers = _readers(found)
        self.param_names = frozenset(self._by_name)
        self._resolved = True

    @property
    def fields(self) -> dict[str, Any]:
        """Name -> FastAPI's `ModelField` of each task argument (what the endpoint validates it with)."""
        self.resolve()
        return {p.name: p.field for p in self._params}

    def proof_gaps(self) -> dict[str, str]:
        """Each parameter whose type needs the per-call check, with the reason (for docs and benchmarks)."""
        self.resolve()
        return {p.name: p.gap for p in self._params if p.gap is not None}

    # --- building -----------------------------------------------------------------------------------

    def callback_url(self, base_url: str, path_and_query: str) -> str:
        """The URL Cloud Tasks / Cloud Scheduler calls: `base_url`, the mount prefix, the route's path.

        The prefix is left out when `base_url` already ends with it (users of 0.3 put it there by hand).
        """
        prefix = self.mount_prefix
        if not prefix:
            return base_url + path_and_query
        key = (base_url, prefix)
        start = self._urls.get(key)
        if start is None:
            base_path = urlsplit(base_url).path.rstrip("/")
            start = base_url if base_path.endswith(prefix) else base_url + prefix
            self._urls[key] = start
        return start + path_and_query

    def validate(self, values: Mapping[str, Any], call: str = "delay") -> BaseModel:
        """Validate keywords with the endpoint's own field definitions; raise a `TaskArgumentError`."""
        if not self._resolved:
            self.resolve()
        try:
            return self._validator.model_validate(values)
        except ValidationError as exc:
            raise self._argument_error(exc, call) from None

    def build(self, values: Mapping[str, Any], *, call: str = "delay") -> HttpParts:
        """The request under which FastAPI hands the endpoint exactly `values` (after validation).

        `call` names the method in error messages: `delay` or `scheduler().schedule`.
        """
        validated = self.validate(values, call)
        where = f"{self.endpoint_name}.{call}()"
        data = validated.__dict__
        path_values: dict[str, str] = {}
        query: list[tuple[str, str]] = []
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for param in self._simple_params:
            value = data[param.name]
            given = param.name in values
            try:
                if param.kind is _Kind.PATH:
                    path_values[param.name] = self._path_segment(param, value, where)
                    continue
                if not given:
                    continue
                if param.query_model:
                    items = self._query_model_items(param, value)
                    self._check(param, value, QueryParams(items), where, sent=items)
                    query.extend(items)
                    continue
                texts = self._wire_strings(param, value, where)
                if param.kind is _Kind.QUERY:
                    pairs = [(param.key, text) for text in texts]
                    if param.gap is not None and texts:
                        self._check(param, value, QueryParams(pairs), where, sent=texts)
                    query.extend(pairs)
                elif param.kind is _Kind.HEADER:
                    for text in texts:
                        headers[param.key] = self._header_value(param, text, where)
                        if param.gap is not None:
                            raw = [(param.key.lower().encode("latin-1"), text.encode("latin-1"))]
                            self._check(param, value, Headers(raw=raw), where, sent=text)
                else:
                    for text in texts:
                        cookie = f"{param.key}={_cookie_value(param, text, where)}"
                        if param.gap is not None:
                            self._check(param, value, cookie_parser(cookie), where, sent=text)
                        cookies.append(cookie)
            except _wire.Unwritable as exc:
                raise self._unwritable(param, exc, where) from None
        path = self._path_format.format(**path_values) if path_values else self._path_format
        if query:
            path += "?" + "&".join(f"{_quote(k, where)}={_quote(v, where)}" for k, v in query)
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        body = self._body(validated, values, where) if self._body_params else None
        if body is not None:
            headers["Content-Type"] = "application/json"
        return HttpParts(method=self.method, path_and_query=path, headers=headers, body=body)

    def from_wire(
        self,
        *,
        path_params: Mapping[str, Any],
        query: QueryParams,
        headers: Headers,
        body: bytes | None,
    ) -> dict[str, Any]:
        """The `.delay()` keywords under which the endpoint would receive what a request carries: the inverse
        of `build`, through the endpoint's own fields (used by history recording and dead-letter replay).

        Only the parameters present in the request are returned, so the others keep the endpoint's defaults.
        A value the endpoint's current validation refuses raises `WrongTypeError` (a missing required one
        `MissingParamError`), `param` naming the parameter.
        """
        self.resolve()
        fast = self._fast_from_wire(path_params, query, headers, body)
        if fast is not None:
            return fast
        values: dict[str, Any] = {}
        cookies: dict[str, str] | None = None
        for param in self._simple_params:
            received: Mapping[str, Any]
            if param.kind is _Kind.PATH:
                received = path_params
            elif param.kind is _Kind.QUERY:
                received = query
                if not param.query_model and param.key not in query:
                    continue
            elif param.kind is _Kind.HEADER:
                received = headers
                if param.key.lower() not in headers:
                    continue
            else:
                if cookies is None:
                    cookies = cookie_parser(headers.get("cookie", ""))
                received = cookies
                if param.key not in cookies:
                    continue
            parsed, errors = request_params_to_args([param.field], received)
            if errors:
                raise self._received_error(param, errors)
            values[param.name] = parsed.get(param.name)
        if self._body_params:
            values.update(self._body_from_wire(body))
        return values

    def _fast_from_wire(
        self, path_params: Mapping[str, Any], query: QueryParams, headers: Headers, body: bytes | None
    ) -> dict[str, Any] | None:
        """`from_wire` in one validation of the whole `.delay()` model, for requests it accepts; None when a
        parameter is read in a way only FastAPI's own per-parameter parsing does, or when anything is invalid
        (`from_wire` then finds and names the parameter at fault). About five times faster: it runs for every
        recorded attempt."""
        if self._readers is None:
            return None
        raw: dict[str, Any] = {}
        cookies: dict[str, str] | None = None
        document: Any = _ABSENT
        for name, kind, key, sequence in self._readers:
            if kind is _Kind.PATH:
                value: Any = path_params.get(key, _ABSENT)
            elif kind is _Kind.BODY:
                if document is _ABSENT:
                    if not body:
                        return None
                    try:
                        document = from_json(body)
                    except ValueError:
                        return None
                if not self._embed_body:
                    value = document
                elif isinstance(document, dict):
                    value = document.get(key, _ABSENT)
                else:
                    return None
            else:
                if kind is _Kind.COOKIE:
                    if cookies is None:
                        cookies = cookie_parser(headers.get("cookie", ""))
                    source: Any = cookies
                else:
                    source = query if kind is _Kind.QUERY else headers
                value = (source.getlist(key) or _ABSENT) if sequence else source.get(key, _ABSENT)
            if value is not _ABSENT:
                raw[name] = value
        try:
            validated = self._validator.model_validate(raw)
        except ValidationError:
            return None
        return {name: getattr(validated, name) for name in raw}

    def _body_from_wire(self, body: bytes | None) -> dict[str, Any]:
        if not body:
            document: Any = _ABSENT
        else:
            try:
                document = json.loads(body)
            except ValueError as exc:
                param = self._body_params[0]
                raise WrongTypeError(f"{self.endpoint_name}: the body is not JSON ({exc})", field=param.name) from None
        values: dict[str, Any] = {}
        for param in self._body_params:
            if self._embed_body:
                item = document.get(param.key, _ABSENT) if isinstance(document, dict) else _ABSENT
            else:
                item = document
            if item is _ABSENT:
                if param.field_info.is_required():
                    raise MissingParamError(
                        f"{self.endpoint_name}: the body lacks the required parameter {param.name!r}", param=param.name
                    )
                continue
            parsed, errors = param.field.validate(item, {}, loc=("body", param.key))
            if errors:
                raise self._received_error(param, errors)
            values[param.name] = parsed
        return values

    def _received_error(self, param: _Param, errors: Sequence[Any]) -> TaskArgumentError:
        """The endpoint's refusal of what a request carries for `param`, naming it (and where inside it)."""
        details = [e for e in errors if isinstance(e, Mapping)]
        if details and details[0].get("type") == "missing" and len(details[0].get("loc", ())) <= 2:
            return MissingParamError(
                f"{self.endpoint_name}: {param.kind.value} parameter {param.name!r} is missing", param=param.name
            )
        described = "; ".join(
            f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            + ("" if e.get("type") == "missing" else f" (got {_short(e.get('input'))})")
            for e in details[:3]
        )
        return WrongTypeError(
            f"{self.endpoint_name}: {param.kind.value} parameter {param.name!r} does not fit the endpoint: "
            f"{described or 'invalid'}",
            field=param.name,
        )

    def wire_sizes(self, values: Mapping[str, Any]) -> list[tuple[str, int]]:
        """Each given parameter with the size of its wire form, largest first (for size errors)."""
        validated = self.validate(values).__dict__
        sizes: list[tuple[str, int]] = []
        for param in self._params:
            if param.name not in values:
                continue
            try:
                written = _wire.input_form(validated[param.name])
                if param.kind is _Kind.BODY:
                    size = len(_wire.json_bytes(written))
                else:
                    text = written if isinstance(written, str) else _wire.json_bytes(written).decode("utf-8")
                    size = len(quote(text, safe=""))
            except (_wire.Unwritable, ValueError):
                continue
            sizes.append((param.name, size))
        return sorted(sizes, key=lambda pair: -pair[1])

    # --- parts --------------------------------------------------------------------------------------

    def _body(self, validated: BaseModel, values: Mapping[str, Any], where: str) -> bytes | None:
        given = [p for p in self._body_params if p.name in values]
        if not given and not any(p.field_info.is_required() for p in self._body_params):
            return None
        data = validated.__dict__
        if self._body_proven:
            body = self._proven_body(validated, values)
            if body is None or (len(body) <= _FAST_BODY_LIMIT and b"null" not in body):
                return body
        try:
            if self._embed_body:
                written = {p.key: _wire.input_form(data[p.name], (p.name,)) for p in given}
            else:
                written = _wire.input_form(data[self._body_params[0].name])
            body = _wire.json_bytes(written)
        except _wire.Unwritable as exc:
            param = self._by_name[str(exc.where[0])] if self._embed_body and exc.where else self._body_params[0]
            raise self._unwritable(param, exc, where) from None
        except ValueError as exc:  # a float the JSON encoder refuses, a recursion
            raise UnrepresentableValueError(f"{where}: the body cannot be written as JSON: {exc}") from None
        self._check_body(data, given, json.loads(body), where)
        return body

    def _proven_body(self, validated: BaseModel, values: Mapping[str, Any]) -> bytes | None:
        """The body written by pydantic's serializer: types proven to read back the same."""
        if not self._embed_body:
            param = self._body_params[0]
            if param.name not in values:
                return None
            value = validated.__dict__[param.name]
            if self._body_sets:
                value = _canonical(value)
            assert self._single_body_adapter is not None
            dumped: bytes = self._single_body_adapter.dump_json(value, by_alias=True, exclude_unset=True)
            return dumped
        include = {p.name for p in self._body_params if p.name in values or p.field_info.is_required()}
        canonical: BaseModel = _canonical(validated) if self._body_sets else validated
        body: bytes = canonical.__pydantic_serializer__.to_json(
            canonical, include=include, by_alias=True, exclude_unset=True
        )
        return body

    def _check_body(self, data: Mapping[str, Any], given: Sequence[_Param], parsed: Any, where: str) -> None:
        if not self._embed_body:
            param = self._body_params[0]
            self._compare(param, data[param.name], parsed, where)
            return
        for param in given:
            self._compare(param, data[param.name], parsed.get(param.key), where)

    def _check(self, param: _Param, value: Any, received: Any, where: str, *, sent: Any) -> None:
        """Parse what was written as FastAPI would, with the endpoint's own field; refuse any change."""
        parsed, errors = request_params_to_args([param.field], received)
        if errors:
            raise self._refused_by_endpoint(param, sent, errors, where)
        found = _exact.difference(value, parsed.get(param.name))
        if found is not None:
            raise UnrepresentableValueError(
                f"{where}: {param.kind.value} parameter {param.name!r} cannot be sent exactly: "
                f"written as {_short(sent)}, {found}",
                param=param.name,
            )

    def _compare(self, param: _Param, value: Any, item: Any, where: str) -> None:
        """Validate a parsed body item with the endpoint's own field; refuse any change."""
        parsed, errors = param.field.validate(item, {}, loc=("body", param.key))
        if errors:
            raise self._refused_by_endpoint(param, item, errors, where)
        found = _exact.difference(value, parsed, param.name)
        if found is not None:
            raise UnrepresentableValueError(
                f"{where}: body parameter {param.name!r} cannot be sent exactly: {found}", param=param.name
            )

    def _refused_by_endpoint(self, param: _Param, sent: Any, errors: Sequence[Any], where: str) -> TaskArgumentError:
        first = errors[0] if errors else {}
        message = first.get("msg", "invalid") if isinstance(first, Mapping) else str(first)
        return UnrepresentableValueError(
            f"{where}: {param.kind.value} parameter {param.name!r} cannot be sent: the endpoint would refuse "
            f"what the request carries ({_short(sent)}): {message}",
            param=param.name,
        )

    def _unwritable(self, param: _Param, exc: _wire.Unwritable, where: str) -> UnrepresentableValueError:
        inside = "".join(f"[{part!r}]" if isinstance(part, int) else f".{part}" for part in exc.where[1:])
        return UnrepresentableValueError(
            f"{where}: {param.kind.value} parameter {param.name!r}{inside} cannot be sent: {exc.reason}",
            param=param.name,
        )

    def _path_segment(self, param: _Param, value: Any, where: str) -> str:
        (text,) = self._wire_strings(param, value, where, omit_ok=False)
        assert param.pattern is not None
        if param.pattern.fullmatch(text) is None or (not param.keep_slash and text in {".", ".."}):
            detail = (
                "it contains '/'; declare the path as {" + param.key + ":path} to accept slashes"
                if "/" in text and not param.keep_slash
                else f"the route's convertor matches only {param.pattern.pattern!r}"
            )
            raise UnrepresentableValueError(
                f"{where}: path parameter {param.name!r}={text!r} cannot be sent: {detail}", param=param.name
            )
        if param.keep_slash and any(segment in {".", ".."} for segment in text.split("/")):
            raise UnrepresentableValueError(
                f"{where}: path parameter {param.name!r}={text!r} cannot be sent: "
                "'.' and '..' segments are removed by URL normalisation",
                param=param.name,
            )
        if param.gap is not None:
            self._check(param, value, {param.name: param.convertor.convert(text)}, where, sent=text)
        return _quote(text, where, safe="/" if param.keep_slash else "")

    def _wire_strings(self, param: _Param, value: Any, where: str, *, omit_ok: bool = True) -> list[str]:
        """The strings that make FastAPI rebuild `value`; empty when the parameter is left out."""
        if value is None or (isinstance(value, (list, tuple, set, frozenset)) and not value):
            if omit_ok and _omission_gives(param, value):
                return []
            raise UnrepresentableValueError(
                f"{where}: {param.kind.value} parameter {param.name!r}={value!r} cannot be sent: "
                f"leaving it out would give the endpoint {_describe_default(param)}",
                param=param.name,
            )
        if isinstance(value, (list, tuple, set, frozenset)):
            if param.kind in (_Kind.HEADER, _Kind.COOKIE, _Kind.PATH) and len(value) > 1:
                raise UnrepresentableValueError(
                    f"{where}: {param.kind.value} parameter {param.name!r} has {len(value)} values; "
                    f"Cloud Tasks sends each {param.kind.value} once, so at most one value can be sent",
                    param=param.name,
                )
            texts = [_wire.scalar_text(_wire.input_form(item)) for item in value]
            return sorted(texts) if isinstance(value, (set, frozenset)) else texts
        return [_wire.scalar_text(_wire.input_form(value))]

    def _header_value(self, param: _Param, text: str, where: str) -> str:
        if _wire.HEADER_VALUE.fullmatch(text) is None:
            raise UnrepresentableValueError(
                f"{where}: header parameter {param.name!r}={text!r} cannot be sent: header values "
                "must be visible ASCII without leading or trailing spaces; use a query or body parameter",
                param=param.name,
            )
        return text

    def _query_model_items(self, param: _Param, value: Any) -> list[tuple[str, str]]:
        written = _wire.input_form(value)
        items: list[tuple[str, str]] = []
        for key, item in (written if isinstance(written, dict) else {}).items():
            if item is None:
                continue
            texts = [_wire.scalar_text(v) for v in (item if isinstance(item, list) else [item])]
            items.extend((str(key), text) for text in texts)
        return items

    def _argument_error(self, exc: ValidationError, call: str) -> TaskArgumentError:
        errors = exc.errors(include_url=False)
        first = errors[0]
        name = str(first["loc"][0]) if first["loc"] else "?"
        where = f"{self.endpoint_name}.{call}()"
        if first["type"] == "missing":
            missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
            return MissingParamError(
                f"{where}: missing required argument(s): {', '.join(repr(m) for m in missing)}", param=name
            )
        if first["type"] == "extra_forbidden":
            unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
            aliases = [f"{u!r} is how parameter {self._by_key[u]!r} travels" for u in unknown if u in self._by_key]
            hint = f" ({'; '.join(aliases)}: pass it by its Python name)" if aliases else ""
            return UnknownParamError(
                f"{where}: unexpected keyword argument(s) {', '.join(repr(u) for u in unknown)}{hint}; "
                f"the endpoint accepts: {', '.join(sorted(self.param_names)) or 'no arguments'}",
                param=name,
            )
        details = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']} (got {_short(e.get('input'))})" for e in errors
        )
        return WrongTypeError(f"{where}: invalid value for parameter {name!r}: {details}", field=name)


def _omission_gives(param: _Param, value: Any) -> bool:
    default = param.default
    return default is not _ABSENT and default == value


def _quote(text: str, where: str, safe: str = "") -> str:
    try:
        return quote(text, safe=safe)
    except UnicodeEncodeError:
        raise UnrepresentableValueError(
            f"{where}: {text!r} holds a lone surrogate, which has no UTF-8 form and cannot be in a URL"
        ) from None


class _SortedSet(set):  # type: ignore[type-arg]
    """A set that iterates in sorted order: how a body's sets are written (see `_canonical`)."""

    __slots__ = ()

    def __iter__(self) -> Any:
        return iter(sorted(set.__iter__(self), key=_wire.sort_key))


class _SortedFrozenSet(frozenset):  # type: ignore[type-arg]
    """A frozenset that iterates in sorted order."""

    __slots__ = ()

    def __iter__(self) -> Any:
        return iter(sorted(frozenset.__iter__(self), key=_wire.sort_key))


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
        if not changed:
            return value
        duplicate = value.model_copy(update=changed)
        object.__setattr__(duplicate, "__pydantic_fields_set__", set(value.model_fields_set))
        return duplicate
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
        copied = copy.copy(value)
        for name, item in changed.items():
            object.__setattr__(copied, name, item)
        return copied
    return value


def _cookie_value(param: _Param, text: str, where: str) -> str:
    if _COOKIE_SAFE.fullmatch(text) is not None:
        return text
    out = ['"']
    for char in text:
        code = ord(char)
        if code > 0xFF:
            raise UnrepresentableValueError(
                f"{where}: cookie parameter {param.name!r} holds {char!r}: cookie values are limited to Latin-1",
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


# --- analysis ------------------------------------------------------------------------------------------


def _readers(found: Sequence[_Param]) -> tuple[tuple[str, _Kind, str, bool], ...] | None:
    """How `RoutePlan._fast_from_wire` reads each parameter: `(name, kind, key, several values)`; None when one of
    them needs FastAPI's own parsing (a query model, alias choices, a `Json` field, a cookie's sequence)."""
    readers: list[tuple[str, _Kind, str, bool]] = []
    for param in found:
        info = param.field_info
        if param.query_model or not (info.validation_alias is None or isinstance(info.validation_alias, str)):
            return None
        if any(type(item).__name__ == "Json" for item in info.metadata) or "Json" in repr(info.annotation):
            return None
        sequence = param.kind is not _Kind.BODY and _is_sequence(info.annotation)
        if sequence and param.kind not in (_Kind.QUERY, _Kind.HEADER):
            return None
        key = param.key.lower() if param.kind is _Kind.HEADER else param.key
        readers.append((param.name, param.kind, param.name if param.kind is _Kind.PATH else key, sequence))
    return tuple(readers)


def _is_sequence(annotation: Any) -> bool:
    """Whether FastAPI reads every value of a query key or header for this type (a list, tuple, set, optional or
    not). A wrong guess only costs the fast path: the value then fails validation and `from_wire` parses slowly."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_sequence(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_is_sequence(arg) for arg in get_args(annotation) if arg is not type(None))
    kind = origin or annotation
    return (
        isinstance(kind, type)
        and issubclass(kind, (list, tuple, set, frozenset, collections.abc.Sequence))
        and not (issubclass(kind, (str, bytes)))
    )


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


def _unresolved_name(annotation: Any) -> str | None:
    """The first forward reference left in an annotation, by name."""
    if isinstance(annotation, str):
        return annotation
    forward = getattr(annotation, "__forward_arg__", None)
    if isinstance(forward, str):
        return forward
    if get_origin(annotation) is Literal:
        return None
    for arg in getattr(annotation, "__args__", ()) or ():
        name = _unresolved_name(arg)
        if name is not None:
            return name
    return None


def _param(field: Any, kind: _Kind, **kwargs: Any) -> _Param:
    info: FieldInfo = field.field_info
    missing = _unresolved_name(info.annotation)
    if missing is not None:
        raise _UnresolvedError(field.name, missing)
    text = kind is not _Kind.BODY
    gap = _exact.proof_gap(info.annotation, list(info.metadata), text=text)
    key = kwargs.pop("key", None) or _wire_key(field, kind)
    return _Param(name=field.name, kind=kind, key=key, field=field, gap=gap, **kwargs)


def _collect_params(route: APIRoute, dependant: Any, where: str) -> list[_Param]:
    for sub in route.dependant.dependencies:
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
            _param(
                field,
                _Kind.PATH,
                key=field.name,
                convertor=convertor,
                pattern=re.compile(regex),
                keep_slash=type(convertor).__name__ == "PathConvertor",
            )
        )
    for field in dependant.query_params:
        if _param_model(field.field_info) is None:
            found.append(_param(field, _Kind.QUERY))
        else:
            found.append(dataclasses.replace(_param(field, _Kind.QUERY, query_model=True), gap="a query model"))
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
            found.append(_param(field, kind, key=key))
    for field in dependant.body_params:
        if isinstance(field.field_info, (params.Form, params.File)):
            raise RouteDefinitionError(
                f"{where}: form and file parameters ({field.name!r}) cannot be sent as a task; "
                "use a JSON body (a pydantic model) instead"
            )
        found.append(_param(field, _Kind.BODY))
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
    try:
        model: type[BaseModel] = create_model(model_name, __config__=config, **definitions)
        if not model.__pydantic_complete__:
            namespace = getattr(route.endpoint, "__globals__", {})
            model.model_rebuild(_types_namespace=dict(namespace), raise_errors=True)
    except PydanticUserError as exc:
        missing = re.search(r"define `([^`]+)`", str(exc))
        name = missing.group(1) if missing else "?"
        culprit = next((p.name for p in found if name in repr(p.field_info.annotation)), "?")
        raise _UnresolvedError(culprit, name) from None
    return model
