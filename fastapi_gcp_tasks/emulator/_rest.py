"""The REST transport of Cloud Tasks and Cloud Scheduler: HTTP/1.1 + JSON, as the official clients' `transport="rest"`.

Routes come from the `google.api.http` rules of the services, never written here by hand. The packaged
protos are proto-plus modules that carry no service descriptors, so the rules are read where Google's
generator put them: each method's `_get_http_options()` in the clients' REST transports (one entry per
binding, `additional_bindings` included, plus the service config's mixins: Operations and Locations). The
emulator therefore answers exactly the URLs the installed clients call.

A request is the path variables, the body (`body: "*"` or one field) and the query parameters (camelCase,
nested with dots, repeated by repetition), parsed with `json_format.ParseDict` so an unknown field is
INVALID_ARGUMENT; it is dispatched to the same `Method` table as gRPC, on the same loop, through the same
`invoke`. An answer is the message as camelCase JSON; an error is Google's JSON error with the HTTP status
Google gives its code (`google.api_core.exceptions` is the table, and the clients read it back with it).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.api_core import exceptions as core_exceptions
from google.protobuf import descriptor as pb_descriptor
from google.protobuf import json_format
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from fastapi_gcp_tasks.emulator._rpc import Method, RpcError, invalid, invoke

__all__ = [
    "MAX_BODY_BYTES",
    "RestGateway",
    "Route",
    "compile_route",
    "error_response",
    "http_routes",
    "http_status",
    "parse_request",
    "service_routes",
]

MAX_BODY_BYTES = 64 * 1024 * 1024
"""The largest request body read: the gRPC server's 32 MiB message limit, base64 and JSON included."""

_MAX_QUERY_FIELDS = 1_000
_JSON = "application/json; charset=UTF-8"

_MIXINS = {
    "GetOperation": "google.longrunning.Operations",
    "ListOperations": "google.longrunning.Operations",
    "CancelOperation": "google.longrunning.Operations",
    "DeleteOperation": "google.longrunning.Operations",
    "WaitOperation": "google.longrunning.Operations",
    "GetLocation": "google.cloud.location.Locations",
    "ListLocations": "google.cloud.location.Locations",
}
"""Methods the REST transports take from the service config, and the service that defines each."""

_SYSTEM_PARAMETERS = frozenset(
    {"alt", "key", "fields", "prettyPrint", "quotaUser", "callback", "access_token", "upload_protocol", "uploadType"}
)
"""Google's system parameters, accepted and ignored (as are the `$`-prefixed ones, like the clients' `$alt`)."""


# -- routes --------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of one RPC."""

    service: str
    name: str
    verb: str
    template: str
    pattern: re.Pattern[str]
    fields: tuple[str, ...]
    """The field path (`queue.name`) of each path variable, in the order of the pattern's groups."""
    body: str | None
    """`*` (the whole request), one field's name, or None (everything else in the query string)."""


_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.]*)(?:=([^}]*))?\}")


def _segments(pattern: str) -> str:
    """A regex for path segments: `*` one segment, `**` any number, anything else itself.

    A segment never contains `:`, which starts the custom verb (`/queues/q:pause`).
    """
    parts = []
    for segment in pattern.split("/"):
        if segment == "**":
            parts.append(r"[^:]+")
        elif segment == "*":
            parts.append(r"[^/:]+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


def compile_route(service: str, name: str, verb: str, template: str, body: str | None) -> Route:
    """The `Route` of one binding, its template like `/v2/{parent=projects/*/locations/*}/queues`."""
    fields: list[str] = []
    regex: list[str] = []
    position = 0
    for variable in _VARIABLE.finditer(template):
        regex.append(_segments(template[position : variable.start()]))
        fields.append(variable.group(1))
        regex.append(f"({_segments(variable.group(2) or '*')})")
        position = variable.end()
    regex.append(_segments(template[position:]))
    return Route(
        service=service,
        name=name,
        verb=verb.upper(),
        template=template,
        pattern=re.compile("".join(regex)),
        fields=tuple(fields),
        body=body or None,
    )


def http_routes(transport_base: type, service: str) -> list[Route]:
    """Every binding that a generated REST transport base class (`_Base<Service>RestTransport`) declares."""
    routes = []
    for attribute, value in vars(transport_base).items():
        options = getattr(value, "_get_http_options", None)
        if not attribute.startswith("_Base") or options is None:
            continue
        name = attribute.removeprefix("_Base")
        for rule in options():
            owner = _MIXINS.get(name, service)
            routes.append(compile_route(owner, name, rule["method"], rule["uri"], rule.get("body")))
    return routes


@functools.cache
def service_routes() -> tuple[Route, ...]:
    """The routes of Cloud Tasks v2 and Cloud Scheduler v1, as their installed clients call them."""
    from google.cloud.scheduler_v1.services.cloud_scheduler.transports.rest_base import (
        _BaseCloudSchedulerRestTransport,
    )
    from google.cloud.tasks_v2.services.cloud_tasks.transports.rest_base import _BaseCloudTasksRestTransport

    return (
        *http_routes(_BaseCloudTasksRestTransport, "google.cloud.tasks.v2.CloudTasks"),
        *http_routes(_BaseCloudSchedulerRestTransport, "google.cloud.scheduler.v1.CloudScheduler"),
    )


# -- requests ------------------------------------------------------------------------------------------------------


@functools.cache
def _fields_by_name(message: pb_descriptor.Descriptor) -> dict[str, pb_descriptor.FieldDescriptor]:
    """A message's fields by JSON name and by proto name (the API accepts both)."""
    fields = {field.name: field for field in message.fields}
    fields.update({field.json_name: field for field in message.fields})
    return fields


def _put(data: dict[str, Any], message: pb_descriptor.Descriptor, path: str, value: Any, *, query: bool) -> None:
    """Set the field at dotted `path` (proto or JSON names) in the JSON object `data` of `message`.

    From the query string (`query=True`) a repeated field collects its values, a second value of another
    field is refused, and `true` / `false` become booleans; a path variable replaces what the body said.
    """
    parts = path.split(".")
    target = data
    for index, part in enumerate(parts):
        field = _fields_by_name(message).get(part)
        if field is None:
            where = "query parameter" if query else "path variable"
            raise invalid(f'Invalid JSON payload received. Unknown name "{path}": Cannot bind {where}.')
        repeated = field.is_repeated
        if index < len(parts) - 1:
            nested = target.setdefault(field.json_name, {})
            if field.message_type is None or repeated or not isinstance(nested, dict):
                raise invalid(f'Invalid JSON payload received. Cannot bind "{path}": "{part}" has no fields.')
            target, message = nested, field.message_type
            continue
        if query and field.type == pb_descriptor.FieldDescriptor.TYPE_BOOL:
            if value not in ("true", "false"):
                raise invalid(f'Invalid value at "{path}" (TYPE_BOOL), "{value}"')
            value = value == "true"
        if query and repeated:
            values = target.setdefault(field.json_name, [])
            if not isinstance(values, list):
                raise invalid(f'Invalid JSON payload received. Cannot bind "{path}" twice.')
            values.append(value)
        elif query and field.json_name in target:
            raise invalid(f'Invalid JSON payload received. Repeated values for non-repeated field "{path}".')
        else:
            target[field.json_name] = value


def parse_request(route: Route, match: re.Match[str], request_pb: Any, query: bytes, body: bytes) -> Any:
    """The request message of a call: its body, then its query parameters, then its path variables.

    Anything the message cannot hold is INVALID_ARGUMENT, never an internal error.
    """
    message = request_pb.DESCRIPTOR
    data: dict[str, Any] = {}
    try:
        if route.body is not None and body.strip():
            parsed = json.loads(body)
            if route.body == "*":
                if not isinstance(parsed, dict):
                    raise invalid("Invalid JSON payload received. The request body must be a JSON object.")
                data = parsed
            else:
                _put(data, message, route.body, parsed, query=False)
        pairs = urllib.parse.parse_qsl(
            query.decode("latin-1"), keep_blank_values=True, errors="strict", max_num_fields=_MAX_QUERY_FIELDS
        )
        for key, value in pairs:
            if not key.startswith("$") and key not in _SYSTEM_PARAMETERS:
                _put(data, message, key, value, query=True)
        for path, value in zip(route.fields, match.groups(), strict=True):
            _put(data, message, path, urllib.parse.unquote(value, errors="strict"), query=False)
        request = request_pb()
        json_format.ParseDict(data, request, ignore_unknown_fields=False)
    except RpcError:
        raise
    except (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise invalid(f"Invalid JSON payload received. {exc}") from None
    return request


# -- responses -----------------------------------------------------------------------------------------------------


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status Google answers for a gRPC status code (INVALID_ARGUMENT 400, NOT_FOUND 404, ...)."""
    status = core_exceptions.exception_class_for_grpc_status(code).code  # type: ignore[no-untyped-call]
    return int(status) if status is not None else 500


def error_response(code: grpc.StatusCode, message: str, *, status: int | None = None) -> Response:
    """Google's JSON error: `{"error": {"code": <HTTP status>, "message": ..., "status": "NOT_FOUND"}}`."""
    status = http_status(code) if status is None else status
    document = {"error": {"code": status, "message": message, "status": code.name}}
    return Response(json.dumps(document), status_code=status, media_type=_JSON)


def _message_response(message: Any, *, integer_enums: bool) -> Response:
    pb = getattr(message, "_pb", message)
    content = json_format.MessageToJson(pb, indent=None, use_integers_for_enums=integer_enums)
    return Response(content, status_code=200, media_type=_JSON)


class _BodyTooLargeError(Exception):
    pass


class _DisconnectedError(Exception):
    pass


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise _BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise _DisconnectedError
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLargeError
        chunks.append(chunk)
        if not event.get("more_body", False):
            return b"".join(chunks)


# -- the gateway ---------------------------------------------------------------------------------------------------


class RestGateway:
    """An ASGI app answering the REST routes of both services with the `Method`s that gRPC serves."""

    def __init__(
        self, methods: Iterable[Method], *, routes: Sequence[Route] | None = None, max_body: int = MAX_BODY_BYTES
    ) -> None:
        """Serve `methods` on `routes` (by default `service_routes()`); an RPC with no method is UNIMPLEMENTED."""
        self.methods = {(method.service, method.name): method for method in methods}
        self.routes = tuple(service_routes() if routes is None else routes)
        self.max_body = max_body
        self.prefixes = tuple(sorted({"/" + route.template.split("/")[1] + "/" for route in self.routes}))
        """The API versions' path prefixes (`/v1/`, `/v2/`): every path under them is the gateway's."""

    def candidates(self, scope: Scope) -> list[tuple[Route, re.Match[str]]]:
        """The routes whose path template matches the request's path, whatever their verb."""
        raw = scope.get("raw_path")
        path = raw.decode("latin-1").partition("?")[0] if raw else scope["path"]
        found = []
        for route in self.routes:
            match = route.pattern.fullmatch(path)
            if match is not None:
                found.append((route, match))
        return found

    def serves(self, scope: Scope) -> bool:
        """Whether the request's path is under an API version (`/v2/...`): answered here, if only by a 404."""
        return scope["type"] == "http" and str(scope["path"]).startswith(self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one call."""
        try:
            response = await self._respond(scope, receive)
        except _DisconnectedError:
            return
        await response(scope, receive, send)

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        verb = scope["method"]
        candidates = self.candidates(scope)
        chosen = next(((route, match) for route, match in candidates if route.verb == verb), None)
        try:
            body = await _read_body(scope, receive, self.max_body)
        except _BodyTooLargeError:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request body is larger than the emulator's limit of {self.max_body} bytes",
                status=413,
            )
        if chosen is None:
            allowed = sorted({route.verb for route, _ in candidates})
            hint = f" (this path takes {', '.join(allowed)})" if allowed else ""
            return error_response(grpc.StatusCode.NOT_FOUND, f"Method not found: {verb} {scope['path']}{hint}")
        route, match = chosen
        method = self.methods.get((route.service, route.name))
        if method is None:  # the gRPC server's words for a method it does not serve
            return error_response(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: /{route.service}/{route.name}")
        query = scope.get("query_string", b"")
        answer = functools.partial(_message_response, integer_enums="enum-encoding=int" in _alt(query))
        try:
            # each step through `invoke`, as over gRPC: what the client got wrong is the step's RpcError,
            # and a bug of ours a logged INTERNAL rather than uvicorn's plain-text 500
            request = invoke(functools.partial(parse_request, route, match, method.request_pb, query), body)
            return invoke(answer, invoke(method.call, request))  # type: ignore[no-any-return]
        except RpcError as exc:
            return error_response(exc.code, exc.message)


def _alt(query: bytes) -> str:
    """The `$alt` system parameter (`json;enum-encoding=int` from the clients), or ``."""
    try:
        pairs = urllib.parse.parse_qsl(query.decode("latin-1"), max_num_fields=_MAX_QUERY_FIELDS)
    except ValueError:
        return ""  # parse_request refuses the query string with a reason
    for key, value in pairs:
        if key in ("$alt", "alt"):
            return value
    return ""
