"""What the emulator's Cloud Tasks and Cloud Scheduler services share: RPC plumbing and HTTP-target rules.

One threading model for both services: every RPC handler is synchronous and runs inline on the event
loop of the emulator's gRPC server, as do the timers and the deliveries; the services hold no locks.
Calls from other threads (`Emulator.reset()`, `Emulator.is_idle()`) are marshalled onto that loop by
`Emulator`. A handler that must wait starts an asyncio task instead of blocking.

Google's limits come from `fastapi_gcp_tasks._limits`, and the checks of what the services refuse from
`fastapi_gcp_tasks.build._job_checks`, which the library uses too; this module turns their refusals into
INVALID_ARGUMENT.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2  # type: ignore[import-untyped, unused-ignore]

from fastapi_gcp_tasks.build import _job_checks as _checks
from fastapi_gcp_tasks.build._job_checks import METHODS, POST
from fastapi_gcp_tasks.emulator._types import DeliveryResult
from fastapi_gcp_tasks.exception import TaskLimitError

__all__ = [
    "METHODS",
    "POST",
    "Method",
    "RpcError",
    "attempt_status",
    "backoff",
    "check_deadline",
    "check_http_target",
    "duration",
    "grpc_handlers",
    "invalid",
    "invoke",
    "rpc_code",
    "seconds",
    "unary_handler",
]

logger = logging.getLogger("fastapi_gcp_tasks.emulator")


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


@dataclasses.dataclass(frozen=True, slots=True)
class Method:
    """One RPC of a service: what both transports (gRPC and REST) dispatch to, so they cannot drift.

    `call` takes the parsed request (a protobuf message of `request_type`) and returns the response
    message; it is synchronous and runs inline on the emulator's event loop, whichever transport called.
    """

    service: str
    """The full protobuf name of the service, like `google.cloud.tasks.v2.CloudTasks`."""
    name: str
    """The RPC's name, like `CreateTask`."""
    call: Callable[[Any], Any]
    request_type: Any
    """The request message class (protobuf or proto-plus)."""

    @property
    def request_pb(self) -> Any:
        """The protobuf class of the request (a proto-plus type's underlying message)."""
        return self.request_type.pb() if hasattr(self.request_type, "pb") else self.request_type


def grpc_handlers(methods: Iterable[Method]) -> list[grpc.GenericRpcHandler]:
    """One generic gRPC handler per service among `methods`, each method served by `unary_handler`."""
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method in methods:
        by_service.setdefault(method.service, {})[method.name] = unary_handler(method.call, method.request_type)
    return [grpc.method_handlers_generic_handler(service, handlers) for service, handlers in by_service.items()]


def invoke(call: Callable[[Any], Any], request: Any) -> Any:
    """`call(request)`; an unexpected exception is logged and becomes INTERNAL: the server lives on."""
    try:
        return call(request)
    except RpcError:
        raise
    except Exception as exc:
        logger.exception("emulator: internal error in %s", getattr(call, "__name__", call))
        raise RpcError(grpc.StatusCode.INTERNAL, f"emulator internal error: {type(exc).__name__}: {exc}") from exc


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
            return bytes(invoke(method, request).SerializeToString())
        except RpcError as exc:
            context.abort(exc.code, exc.message)
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
    try:
        return _checks.check_duration(value, field)
    except TaskLimitError as exc:
        raise invalid(str(exc)) from None


def check_deadline(value: Any, field: str) -> float:
    """An HTTP target's deadline in seconds, 15 s to 30 min (`dispatch_deadline`, `attempt_deadline`)."""
    try:
        return _checks.check_deadline(value, field)
    except TaskLimitError as exc:
        raise invalid(str(exc)) from None


# -- HTTP targets ------------------------------------------------------------------------------------------------


def check_http_target(target: Any, prefix: str, url_field: str) -> str:
    """Check an HTTP target as both services do (`build._job_checks.check_http_target`); returns the method's name.

    INVALID_ARGUMENT with the check's message otherwise.
    """
    try:
        return _checks.check_http_target(target, prefix, url_field)
    except TaskLimitError as exc:
        raise invalid(str(exc)) from None
