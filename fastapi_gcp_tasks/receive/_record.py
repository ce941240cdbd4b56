"""Recording into task history: each attempt on the worker side, each creation on the sending side.

`DelayedRouteBuilder(..., history=history)` (and the async and scheduled builders) turn both on for the
routes they build:

* worker side: the route class records one `AttemptEvent` per request of a task endpoint, at the ASGI level
  around the whole route (`RecordingRoute.handle`), so it sees the status code that was really sent: FastAPI's
  422, an `HTTPException`, a poison policy's or `max_retries`'s acknowledgement, and an exception escaping the
  handler (recorded as a failed 500, then raised on as before). Only a request the route's authenticators
  accepted is recorded (`may_act(request, "history")`): a forged request writes nothing.
* sending side: `.delay()` records a `CreatedEvent` once the task exists: after the sender returns
  (immediate), when the buffer's flush created it (buffered), when the outbox row joined the caller's
  transaction (outbox; see `record_outbox_row`).

Recording never fails a request or a `.delay()`: `TaskHistory.record_*` only enqueue, and anything that goes
wrong while building an event is logged and dropped. The arguments are the endpoint's validated values
(`RoutePlan.from_wire`, the same parsing as dead-letter replay), redacted by `TaskHistory.arguments_for_storage`
before any event holds them.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, QueryParams
from starlette.types import Message, Receive, Scope, Send

from fastapi_gcp_tasks.exception import TaskArgumentError
from fastapi_gcp_tasks.history._types import AttemptEvent, CreatedEvent
from fastapi_gcp_tasks.receive import _headers as h
from fastapi_gcp_tasks.receive._auth import RAW_BODY, may_act
from fastapi_gcp_tasks.receive._poison import DEAD_LETTERED
from fastapi_gcp_tasks.receive._retries import GAVE_UP_HEADER

if TYPE_CHECKING:
    from fastapi_gcp_tasks.build._plan import RoutePlan
    from fastapi_gcp_tasks.history._history import TaskHistory
    from fastapi_gcp_tasks.history._types import DispatchMode

__all__ = [
    "AttemptRecorder",
    "Creation",
    "check_history",
    "endpoint_template",
    "recording_route_class",
    "replaying",
    "trace_id",
]

logger = logging.getLogger("fastapi_gcp_tasks.history")

_GAVE_UP = GAVE_UP_HEADER.encode("latin-1")
_DELIVERY_HEADERS = frozenset({h.TASK_NAME.encode("latin-1"), h.SCHEDULER_JOB_NAME.encode("latin-1")})
_BOUND_ROUTE = "__fastapi_gcp_tasks_route__"
_replaying: contextvars.ContextVar[bool] = contextvars.ContextVar("fastapi_gcp_tasks_replaying", default=False)


def check_history(history: object) -> TaskHistory | None:
    """`history=` of a builder or of `.options()`: None, or a `TaskHistory` (else `TaskArgumentError`)."""
    if history is None:
        return None
    try:
        from fastapi_gcp_tasks.history._history import TaskHistory
    except ImportError as exc:  # the `history` extra is missing: nothing given can be a TaskHistory
        raise TaskArgumentError(
            f"history must be a fastapi_gcp_tasks.history.TaskHistory ({exc}); install fastapi-gcp-tasks[history]",
            param="history",
        ) from None
    if not isinstance(history, TaskHistory):
        raise TaskArgumentError(
            f"history must be a fastapi_gcp_tasks.history.TaskHistory, not {type(history).__name__}",
            param="history",
        )
    return history


def location_of(path: str | None) -> str | None:
    """`projects/P/locations/L` of a queue path or a location path, or None."""
    if not path:
        return None
    parts = path.split("/")
    if len(parts) >= 4 and parts[0] == "projects" and parts[2] == "locations":
        return "/".join(parts[:4])
    return None


def endpoint_template(route: APIRoute) -> str:
    """The key history groups an endpoint by: the path template of the task route its endpoint is bound to.

    Both sides use it, so a task's creation and its attempts carry the same endpoint (without outer
    `include_router` prefixes or mounts, which the sending side may not know).
    """
    bound = getattr(route.endpoint, _BOUND_ROUTE, None)
    return str((bound or route).path_format)


def trace_id(headers: Mapping[str, str]) -> str | None:
    """The trace id of a delivery: W3C `traceparent`, else Google's `X-Cloud-Trace-Context`."""
    parent = headers.get("traceparent")
    if parent:
        parts = parent.strip().split("-")
        if len(parts) >= 4 and len(parts[1]) == 32:
            return parts[1]
    google = headers.get("x-cloud-trace-context")
    if google:
        trace = google.split("/", 1)[0].strip()
        return trace or None
    return None


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- worker side ------------------------------------------------------------------------------------------


class AttemptRecorder:
    """Builds and records the `AttemptEvent` of each authenticated request to the routes of one builder."""

    __slots__ = ("history", "location")

    def __init__(self, history: TaskHistory, *, location: str | None) -> None:
        self.history = history
        self.location = location
        """`projects/P/locations/L` of the builder: makes full task names from the short delivery headers."""

    async def record(self, route: APIRoute, scope: Scope, answer: _Answer, duration: float) -> None:
        """Record the attempt `answer` describes (after it was sent), if it is an authenticated task delivery.

        Only the checks run here, on the request's event loop: whether the request is a delivery and whether
        its authenticators accepted it. The event itself (the arguments rebuilt through the endpoint's
        validation, then redacted) is built by the history's writer thread, so the loop is free for the next
        request at once.
        """
        if not any(name in _DELIVERY_HEADERS for name, _ in scope["headers"]):
            return  # not a delivery of a task or a job: nothing to attach an attempt to
        try:
            if not await may_act(Request(scope), "history"):
                return
        except Exception:  # noqa: BLE001 - the authenticator refused the request (its answer was sent): record nothing
            return
        self.history.record_attempt_later(functools.partial(self._event, route, scope, answer, duration, time.time()))

    def _event(
        self, route: APIRoute, scope: Scope, answer: _Answer, duration: float, ended: float
    ) -> AttemptEvent | None:
        """The attempt's event, or None for a request that names no task or job after all (blank headers)."""
        # One pass over the raw headers (ASGI names are lower-case) instead of a scan per header read.
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        task_id = h.text(headers.get(h.TASK_NAME))
        job = h.text(headers.get(h.SCHEDULER_JOB_NAME)) if h.flag(headers.get(h.SCHEDULER)) else None
        if task_id is None and job is None:
            return None
        queue = h.text(headers.get(h.QUEUE_NAME))
        if task_id is not None:
            name = f"{self.location}/queues/{queue}/tasks/{task_id}" if self.location and queue else task_id
        else:
            name = f"job:{job}@{h.text(headers.get(h.SCHEDULER_SCHEDULE_TIME)) or ''}"
        status = answer.status
        if status is None:  # nothing was sent: the exception becomes the server's answer (an HTTP error's own status)
            code = getattr(answer.error, "status_code", None)
            status = code if isinstance(code, int) else 500
        error_type = error_message = None
        outcome: Outcome = "succeeded" if 200 <= status < 300 else "failed"
        arguments_valid = status != 422
        dead_lettered: tuple[str, Any] | None = scope.get(DEAD_LETTERED)
        if answer.error is not None:
            outcome, error_type, error_message = "failed", type(answer.error).__qualname__, str(answer.error)
        elif dead_lettered is not None:
            reason, errors = dead_lettered
            outcome = "dead_letter"
            arguments_valid = reason != "invalid_request"
            error_type = "RequestValidationError" if reason == "invalid_request" else _first(errors, "type")
            error_message = _summary(errors)
        elif answer.gave_up:
            outcome = "gave_up"
        arguments = None
        plan = _plan_of(route)
        if arguments_valid and plan is not None:
            try:
                values = plan.from_wire(
                    path_params=scope.get("path_params", {}),
                    query=QueryParams(scope.get("query_string", b"")),
                    headers=Headers(scope=scope),
                    body=scope.get(RAW_BODY, b""),
                )
            except TaskArgumentError:
                values = None
            if values is not None:
                arguments = self.history.arguments_for_storage(values)
        return AttemptEvent(
            task_name=name,
            queue_name=queue,
            endpoint=endpoint_template(route),
            method=str(scope.get("method", "")),
            arguments=arguments,
            retry_count=h.integer(headers.get(h.RETRY_COUNT)) or 0,
            execution_count=h.integer(headers.get(h.EXECUTION_COUNT)) or 0,
            started_at=dt.datetime.fromtimestamp(ended - duration, dt.UTC),
            duration=duration,
            status_code=status,
            error_type=error_type,
            error_message=error_message,
            trace_id=trace_id(headers),
            outcome=outcome,
            job_name=job,
        )


Outcome = Literal["succeeded", "failed", "dead_letter", "gave_up"]


class _Answer:
    """What one request to a recorded route received and answered."""

    __slots__ = ("error", "headers", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: Any = ()
        """The raw headers of the answer (read by the writer thread, not on the request path)."""
        self.error: Exception | None = None

    @property
    def gave_up(self) -> bool:
        """A `max_retries` acknowledgement: a 200 carrying `GAVE_UP_HEADER`."""
        return self.status == 200 and any(name.lower() == _GAVE_UP for name, _ in self.headers)


def _plan_of(route: APIRoute) -> RoutePlan | None:
    plan = getattr(route, "task_plan", None)
    if plan is None:
        plan = getattr(getattr(route.endpoint, _BOUND_ROUTE, None), "task_plan", None)
    return plan


def _first(errors: Any, key: str) -> str | None:
    if isinstance(errors, list | tuple) and errors and isinstance(errors[0], Mapping):
        value = errors[0].get(key)
        return None if value is None else str(value)
    return None


def _summary(errors: Any) -> str | None:
    if not isinstance(errors, list | tuple) or not errors:
        return None
    parts = []
    for error in errors[:5]:
        if isinstance(error, Mapping):
            where = ".".join(str(part) for part in error.get("loc", ()) or ())
            parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or None


def recording_route_class(base: type[APIRoute], recorder: AttemptRecorder) -> type[APIRoute]:
    """A subclass of `base` whose requests `recorder` records, around everything the route does.

    The recording wraps the route's ASGI `handle`, outside the handler, the poison policy and FastAPI's own
    exception handling: it sees the status that was sent, then records (after the answer went out).
    """

    class RecordingRoute(base):  # type: ignore[valid-type,misc]
        task_recorder = recorder

        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await super().handle(scope, receive, send)
                return
            start = time.perf_counter()
            answer = _Answer()

            async def watch(message: Message) -> None:
                if message["type"] == "http.response.start":
                    answer.status = int(message["status"])
                    answer.headers = message.get("headers", ())
                await send(message)

            try:
                await super().handle(scope, receive, watch)
            except Exception as error:
                answer.error = error
                await recorder.record(self, scope, answer, time.perf_counter() - start)
                raise
            await recorder.record(self, scope, answer, time.perf_counter() - start)

    RecordingRoute.__name__ = RecordingRoute.__qualname__ = f"Recording{base.__name__}"
    return RecordingRoute


# --- sending side -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Creation:
    """One `.delay()` of a recorded route: everything its `CreatedEvent` needs but the created task.

    Made current (`dispatch._sink.creating`) while `.delay()` runs; a sink's `PreparedTask` claims it
    (`deferred`), and the buffer or the outbox calls `created` when the task really exists.
    """

    history: TaskHistory
    endpoint: str
    method: str
    arguments: Mapping[str, Any] | None
    replay: bool = False
    deferred: bool = False

    @classmethod
    def start(cls, history: TaskHistory, endpoint: str, method: str, values: Mapping[str, Any]) -> Creation | None:
        """The creation of one `.delay(**values)`; None (nothing recorded) if the arguments cannot be stored."""
        try:
            arguments = history.arguments_for_storage(values)
        except Exception:
            logger.exception("could not prepare the history of a task of %s", endpoint)
            return None
        return cls(history, endpoint, method, arguments, replay=_replaying.get())

    def created(self, task: Any, mode: DispatchMode) -> None:
        """Record `task` (a `tasks_v2.Task` or its protobuf) as created (`mode`: how); never raises."""
        try:
            message = getattr(task, "_pb", task)
            name = str(message.name)
            eta = message.schedule_time.ToDatetime(tzinfo=dt.UTC) if message.HasField("schedule_time") else None
            self.history.record_created(
                CreatedEvent(
                    task_name=name,
                    queue_name=name.split("/queues/", 1)[-1].split("/", 1)[0],
                    endpoint=self.endpoint,
                    method=self.method,
                    arguments=self.arguments,
                    eta=eta,
                    dispatch_mode="replay" if self.replay else mode,
                    created_at=_utc_now(),
                )
            )
        except Exception:
            logger.exception("could not record the creation of a task of %s", self.endpoint)


class replaying:  # noqa: N801 - used as a context manager, like contextlib's
    """Within the block, creations are recorded with `dispatch_mode="replay"` (dead-letter replay)."""

    def __enter__(self) -> None:
        self._token = _replaying.set(True)

    def __exit__(self, *exc: object) -> None:
        _replaying.reset(self._token)
