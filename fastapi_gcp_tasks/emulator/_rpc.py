"""What the emulator's Cloud Tasks and Cloud Scheduler services share: RPC plumbing and HTTP-target rules.

One threading model for both services: every RPC handler is synchronous and runs inline on the event
loop of the emulator's gRPC server, as do the timers and the deliveries; the services hold no locks.
Calls from other threads (`Emulator.reset()`, `Emulator.is_idle()`) are marshalled onto that loop by
`Emulator`. A handler that must wait starts an asyncio task instead of blocking.

Google's limits come from `fastapi_gcp_tasks._limits`; this module only applies them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2  # type: ignore[import-untyped, unused-ignore]

from fastapi_gcp_tasks._limits import (
    BODY_METHODS,
    MAX_DISPATCH_DEADLINE,
    MAX_HEADER_BYTES,
    MAX_URL_LENGTH,
    MIN_DISPATCH_DEADLINE,
)
from fastapi_gcp_tasks.emulator._types import DeliveryResult

__all__ = [
    "METHODS",
    "POST",
    "RpcError",
    "attempt_status",
    "backoff",
    "check_deadline",
    "check_http_target",
    "duration",
    "invalid",
    "rpc_code",
    "seconds",
    "unary_handler",
]

logger = logging.getLogger("fastapi_gcp_tasks.emulator")

POST = 1
METHODS: Mapping[int, str] = {1: "POST", 2: "GET", 3: "HEAD", 4: "PUT", 5: "DELETE", 6: "PATCH", 7: "OPTIONS"}
"""`HttpMethod` numbers to names; `google.cloud.tasks.v2` and `google.cloud.scheduler.v1` number them alike."""

_MAX_DURATION_SECONDS = 315_576_000_000
"""The largest `google.protobuf.Duration` (10,000 years)."""


# -- errors and handlers -------------------------------------------------------------------------------------------


class RpcError(Exception):
    """Ends an RPC with a status code and message, as the real service would."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> RpcError:
    """INVALID_ARGUMENT with `message`."""
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def unary_handler(method: Callable[[Any], Any], request_type: Any) -> grpc.RpcMethodHandler:
    """A synchronous unary handler: parses the request itself, then calls `method` and serializes its answer.

    Undecodable bytes get INVALID_ARGUMENT (grpcio would answer INTERNAL), an `RpcError` its own status,
    and any other exception is logged and answered INTERNAL: the server lives on.
    """
    request_pb = request_type.pb() if hasattr(request_type, "pb") else request_type
    parse = request_pb.FromString
    type_name = request_pb.DESCRIPTOR.name

    def handle(payload: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = parse(payload)
        except (DecodeError, RecursionError, ValueError):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {type_name}")
        try:
            return bytes(method(request).SerializeToString())
        except RpcError as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:
            logger.exception("emulator: internal error in %s", getattr(method, "__name__", method))
            context.abort(grpc.StatusCode.INTERNAL, f"emulator internal error: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable: context.abort raises")

    return grpc.unary_unary_rpc_method_handler(handle)


# -- the status an attempt records -------------------------------------------------------------------------------

# The status a failed attempt records (Cloud Tasks: `Attempt.response_status`; Cloud Scheduler: `Job.status`).
# Neither service documents its mapping; both follow the canonical one of `google/rpc/code.proto`, read backwards,
# so one table serves both: another 4xx is FAILED_PRECONDITION, another 5xx INTERNAL. They differ only in the
# message (see `attempt_status`).
HTTP_TO_RPC: Mapping[int, int] = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    409: code_pb2.ABORTED,
    412: code_pb2.FAILED_PRECONDITION,
    429: code_pb2.RESOURCE_EXHAUSTED,
    499: code_pb2.CANCELLED,
    501: code_pb2.UNIMPLEMENTED,
    503: code_pb2.UNAVAILABLE,
    504: code_pb2.DEADLINE_EXCEEDED,
}


def rpc_code(status: int) -> int:
    """The `google.rpc.Code` recorded for an HTTP response with `status`."""
    if 200 <= status < 300:
        return int(code_pb2.OK)
    code = HTTP_TO_RPC.get(status)
    if code is not None:
        return int(code)
    if 400 <= status < 500:
        return int(code_pb2.FAILED_PRECONDITION)
    if 500 <= status < 600:
        return int(code_pb2.INTERNAL)
    return int(code_pb2.UNKNOWN)


def attempt_status(result: DeliveryResult, *, http_message: str, ok_message: str | None = None) -> tuple[int, str]:
    """The code and message an attempt records.

    `http_message` is formatted with the HTTP `status` (Cloud Tasks says "HTTP status code 503", Cloud
    Scheduler "HTTP 503"); `ok_message`, when given, replaces it for a 2xx (a job's status is then empty).
    No response: DEADLINE_EXCEEDED after the deadline, UNAVAILABLE otherwise, with the deliverer's reason.
    """
    status = result.status
    if status is None:
        if result.timed_out:
            return int(code_pb2.DEADLINE_EXCEEDED), result.error or "deadline exceeded"
        return int(code_pb2.UNAVAILABLE), result.error or "no response"
    if ok_message is not None and result.ok:
        return int(code_pb2.OK), ok_message
    return rpc_code(status), http_message.format(status=status)


# -- retries -----------------------------------------------------------------------------------------------------


def backoff(min_backoff: float, max_backoff: float, max_doublings: int, retries: int) -> float:
    """The delay before retry number `retries` (0 for the first retry), for Cloud Tasks and Cloud Scheduler alike.

    The interval starts at `min_backoff`, doubles `max_doublings` times, then grows linearly by the last
    doubled interval, and never exceeds `max_backoff` (10 s, 300 s, 3 doublings: 10, 20, 40, 80, 160, 240,
    300, 300, ...).
    """
    doublings = max(max_doublings, 0)
    if retries <= doublings:
        delay = min_backoff * 2.0 ** min(retries, 64)
    else:
        delay = min_backoff * 2.0 ** min(doublings, 64) * (retries - doublings + 1)
    return min(delay, max_backoff)


# -- durations and deadlines -------------------------------------------------------------------------------------


def seconds(value: Any) -> float:
    """A `google.protobuf.Duration` in seconds."""
    return float(value.seconds) + float(value.nanos) / 1e9


def duration(value: float) -> Any:
    """`value` seconds as a `google.protobuf.Duration`."""
    result = duration_pb2.Duration()
    result.FromNanoseconds(round(value * 1e9))
    return result


def check_duration(value: Any, field: str) -> float:
    """A non-negative, well-formed Duration in seconds; INVALID_ARGUMENT naming `field` otherwise."""
    whole, nanos = value.seconds, value.nanos
    if not (0 <= whole <= _MAX_DURATION_SECONDS and 0 <= nanos < 1_000_000_000):
        raise invalid(f"{field} must be a non-negative duration, got {whole}s {nanos}ns")
    return float(whole) + float(nanos) / 1e9


def check_deadline(value: Any, field: str) -> float:
    """An HTTP target's deadline in seconds, 15 s to 30 min (`dispatch_deadline`, `attempt_deadline`)."""
    deadline = check_duration(value, field)
    if not MIN_DISPATCH_DEADLINE <= deadline <= MAX_DISPATCH_DEADLINE:
        raise invalid(f"{field} must be between 15 s and 30 min, got {deadline:g} s")
    return deadline


# -- HTTP targets ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _url_problem(url: str) -> str | None:
    """Why the services would refuse `url`, or None; cached because the tasks of one app share a few URLs."""
    if not url:
        return "is required"
    if len(url) > MAX_URL_LENGTH:
        return f"is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed"
    if not url[:8].lower().startswith(("http://", "https://")):
        return f"{url!r} must be an absolute http:// or https:// URL"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return f"{url!r} contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL: {exc}"
    if not hostname:
        return f"{url!r} has no host"
    return None


def _header_problem(name: str, value: str) -> str | None:
    if not name or any(c not in _TOKEN_CHARS for c in name):
        return f"{name!r} is not a valid header name"
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return f"[{name!r}] contains control characters"
    return None


_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def check_http_target(target: Any, prefix: str, url_field: str) -> str:
    """Check an HTTP target as both services do; returns the method's name. INVALID_ARGUMENT otherwise.

    `target` is a Cloud Tasks `HttpRequest` or a Cloud Scheduler `HttpTarget`, `prefix` names it in the
    messages (`task.http_request`, `http_target`) and `url_field` is its URL field (`url`, `uri`). The URL
    must be an absolute http(s) URL of at most 2,083 characters with a host; a body needs POST, PUT or
    PATCH; header names are HTTP tokens, values carry no control characters, and all of them stay under
    80 KB; an OIDC or OAuth token names a service account.
    """
    url: str = getattr(target, url_field)
    http_method: int = target.http_method
    headers: Mapping[str, str] = target.headers
    body: bytes = target.body
    kind = target.WhichOneof("authorization_header")
    problem = _url_problem(url)
    if problem is not None:
        raise invalid(f"{prefix}.{url_field} {problem}")
    method = METHODS.get(http_method or POST)
    if method is None:
        raise invalid(f"{prefix}.http_method {http_method} is not a valid HttpMethod")
    if body and method not in BODY_METHODS:
        raise invalid(f"{prefix}.body is only allowed with POST, PUT or PATCH, not {method}")
    size = 0
    for name, value in headers.items():
        problem = _header_problem(name, value)
        if problem is not None:
            raise invalid(f"{prefix}.headers{'' if problem.startswith('[') else ': '}{problem}")
        size += len(name.encode()) + len(value.encode())
    if size >= MAX_HEADER_BYTES:
        raise invalid(f"{prefix}.headers total {size} bytes; they must stay under 80 KB ({MAX_HEADER_BYTES} bytes)")
    if kind is not None:
        email = getattr(target, kind).service_account_email
        if not email:
            raise invalid(f"{prefix}.{kind}.service_account_email is required")
        if "@" not in email:
            raise invalid(f"{prefix}.{kind}.service_account_email {email!r} is not a service account email")
    return method
