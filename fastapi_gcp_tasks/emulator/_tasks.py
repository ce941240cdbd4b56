"""The Cloud Tasks v2 service of the emulator: queues, tasks and their dispatch.

The handlers work on the raw protobuf messages (no proto-plus wrapping) and do no I/O. The emulator's
gRPC server (`_grpc_server.py`) calls them on the event loop that also does everything that waits
(timers, deliveries); a lock guards the state for the few methods other threads may call (`add_queue`,
`reset`, `is_idle`). Creating a task
stores it and asks for a "pump" of its queue. The pump, run once per loop
iteration however many tasks arrived, starts every attempt the queue may start now (schedule time
reached, a free slot under `max_concurrent_dispatches`, a token in the `max_dispatches_per_second`
bucket) and sets one timer for the next moment something may become possible. Each attempt is its own
asyncio task, so a hanging worker only holds its own slot until its deadline.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import email.utils
import functools
import heapq
import itertools
import math
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.cloud import tasks_v2
from google.longrunning import operations_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import any_pb2, duration_pb2, empty_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]

from fastapi_gcp_tasks.emulator._clock import Cancellable, call_at
from fastapi_gcp_tasks.emulator._delivery import logger
from fastapi_gcp_tasks.emulator._oidc import TokenSigner
from fastapi_gcp_tasks.emulator._types import Clock, Deliverer, DeliveryRecord, DeliveryRequest, DeliveryResult

__all__ = ["TasksService"]

Task: Any = tasks_v2.Task.pb()
Queue: Any = tasks_v2.Queue.pb()
Attempt: Any = tasks_v2.Attempt.pb()
_BatchCreateTasksResponse: Any = tasks_v2.BatchCreateTasksResponse.pb()
_BatchCreateTasksMetadata: Any = tasks_v2.BatchCreateTasksMetadata.pb()
_ListQueuesResponse: Any = tasks_v2.ListQueuesResponse.pb()
_ListTasksResponse: Any = tasks_v2.ListTasksResponse.pb()

_SERVICE = "google.cloud.tasks.v2.CloudTasks"
_OPERATIONS = "google.longrunning.Operations"

_METHODS = {1: "POST", 2: "GET", 3: "HEAD", 4: "PUT", 5: "DELETE", 6: "PATCH", 7: "OPTIONS"}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_VIEW_FULL = 2
_RUNNING, _PAUSED = 1, 2

_LOCATION_RE = re.compile(r"projects/([A-Za-z0-9.:_-]{1,100})/locations/([A-Za-z0-9-]{1,63})")
_QUEUE_RE = re.compile(r"(projects/[A-Za-z0-9.:_-]{1,100}/locations/[A-Za-z0-9-]{1,63})/queues/([A-Za-z0-9-]{1,100})")
_TASK_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,500}")
_QUEUE_FORMAT = "projects/PROJECT_ID/locations/LOCATION_ID/queues/QUEUE_ID"

MAX_TASK_BYTES = 1024 * 1024
MAX_URL_LENGTH = 2083
MAX_HEADER_BYTES = 80 * 1024
MAX_SCHEDULE_AHEAD = dt.timedelta(days=30)
DEFAULT_DEADLINE = 600.0
MIN_DEADLINE, MAX_DEADLINE = 15.0, 1800.0
MAX_RATE, MAX_CONCURRENT = 500.0, 5000
MAX_BATCH = 100
MAX_PAGE_SIZE = 1000
_RESERVED_HEADERS = ("host", "content-length", "user-agent", "x-cloudtasks-", "x-google-", "x-appengine-")

_UPDATABLE_PATHS = frozenset(
    {
        "rate_limits",
        "rate_limits.max_dispatches_per_second",
        "rate_limits.max_concurrent_dispatches",
        "retry_config",
        "retry_config.max_attempts",
        "retry_config.max_retry_duration",
        "retry_config.min_backoff",
        "retry_config.max_backoff",
        "retry_config.max_doublings",
        "http_target",
        "app_engine_routing_override",
        "stackdriver_logging_config",
        "stackdriver_logging_config.sampling_ratio",
    }
)

_HTTP_TO_RPC = {
    400: code_pb2.INVALID_ARGUMENT,
    401: code_pb2.UNAUTHENTICATED,
    403: code_pb2.PERMISSION_DENIED,
    404: code_pb2.NOT_FOUND,
    409: code_pb2.ABORTED,
    429: code_pb2.RESOURCE_EXHAUSTED,
    499: code_pb2.CANCELLED,
    501: code_pb2.UNIMPLEMENTED,
    503: code_pb2.UNAVAILABLE,
    504: code_pb2.DEADLINE_EXCEEDED,
}


class _RpcError(Exception):
    """Ends an RPC with a status code, like the real service would."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> _RpcError:
    return _RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _seconds(duration: Any) -> float:
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _duration(seconds: float) -> Any:
    result = duration_pb2.Duration()
    result.FromNanoseconds(round(seconds * 1e9))
    return result


def _to_datetime(timestamp: Any) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp.seconds + timestamp.nanos / 1e9, dt.UTC)


def _set_time(target: Any, when: dt.datetime) -> None:
    micros = round(when.timestamp() * 1_000_000)
    target.seconds, rest = divmod(micros, 1_000_000)
    target.nanos = rest * 1000


def _rpc_code(status: int) -> int:
    if 200 <= status < 300:
        return int(code_pb2.OK)
    code = _HTTP_TO_RPC.get(status)
    if code is not None:
        return int(code)
    return int(code_pb2.FAILED_PRECONDITION if status < 500 else code_pb2.INTERNAL)


@dataclass(eq=False, slots=True)
class _TaskState:
    """A stored task and what the dispatcher needs to know about it."""

    pb: Any
    queue: _Queue
    task_id: str
    when: dt.datetime
    seq: int
    heap_key: int = -1
    """The key of the heap entry that is valid for this task; -1 while not waiting in the heap."""
    running: bool = False
    gone: bool = False
    first_dispatch: dt.datetime | None = None
    execution_count: int = 0
    previous_response: int | None = None
    retry_reason: str | None = None
    static_headers: dict[str, str] | None = None


@dataclass(eq=False, slots=True)
class _Queue:
    pb: Any
    queue_id: str
    tasks: dict[str, _TaskState] = field(default_factory=dict)
    heap: list[tuple[dt.datetime, int, _TaskState]] = field(default_factory=list)
    inflight: int = 0
    tokens: float = 0.0
    refilled: dt.datetime | None = None
    timer: Cancellable | None = None
    timer_when: dt.datetime | None = None
    pump_pending: bool = False
    deleted: bool = False

    @property
    def running(self) -> bool:
        return bool(self.pb.state == _RUNNING)


def _check_queue_config(queue: Any) -> None:
    rate = queue.rate_limits
    if not 0 <= rate.max_dispatches_per_second <= MAX_RATE:
        raise _invalid(
            f"rate_limits.max_dispatches_per_second must be between 0 (default) and {MAX_RATE:g},"
            f" got {rate.max_dispatches_per_second}"
        )
    if not 0 <= rate.max_concurrent_dispatches <= MAX_CONCURRENT:
        raise _invalid(
            f"rate_limits.max_concurrent_dispatches must be between 0 (default) and {MAX_CONCURRENT},"
            f" got {rate.max_concurrent_dispatches}"
        )
    retry = queue.retry_config
    if retry.max_attempts < -1:
        raise _invalid(f"retry_config.max_attempts must be -1 (unlimited) or more, got {retry.max_attempts}")
    if retry.max_doublings < 0:
        raise _invalid(f"retry_config.max_doublings must not be negative, got {retry.max_doublings}")
    for name in ("min_backoff", "max_backoff", "max_retry_duration"):
        if _seconds(getattr(retry, name)) < 0:
            raise _invalid(f"retry_config.{name} must not be negative")
    if (
        retry.HasField("min_backoff")
        and retry.HasField("max_backoff")
        and _seconds(retry.min_backoff) > _seconds(retry.max_backoff)
    ):
        raise _invalid("retry_config.min_backoff must not be greater than retry_config.max_backoff")


def _fill_queue_defaults(queue: Any) -> None:
    rate = queue.rate_limits
    if rate.max_dispatches_per_second <= 0:
        rate.max_dispatches_per_second = MAX_RATE
    if rate.max_concurrent_dispatches <= 0:
        rate.max_concurrent_dispatches = 1000
    rate.max_burst_size = min(100, max(1, math.ceil(rate.max_dispatches_per_second)))
    retry = queue.retry_config
    if retry.max_attempts == 0:
        retry.max_attempts = 100
    if not retry.HasField("min_backoff"):
        retry.min_backoff.CopyFrom(_duration(0.1))
    if not retry.HasField("max_backoff"):
        retry.max_backoff.CopyFrom(_duration(3600))
    if retry.max_doublings == 0 and not retry.HasField("max_retry_duration"):
        retry.max_doublings = 16
    if not retry.HasField("max_retry_duration"):
        retry.max_retry_duration.CopyFrom(_duration(0))
    if queue.state not in (_RUNNING, _PAUSED):
        queue.state = _RUNNING


def backoff_seconds(retry: Any, retries: int) -> float:
    """The delay before retry number `retries` (0 for the first retry) under a queue's retry_config.

    The interval doubles `max_doublings` times from `min_backoff`, then grows linearly by the last
    doubled interval, and never exceeds `max_backoff`.
    """
    min_backoff = _seconds(retry.min_backoff)
    max_backoff = _seconds(retry.max_backoff)
    doublings = retry.max_doublings
    if retries <= doublings:
        delay = min_backoff * 2.0 ** min(retries, 64)
    else:
        delay = min_backoff * 2.0 ** min(doublings, 64) * (retries - doublings + 1)
    return min(delay, max_backoff)


def _retry_after(result: DeliveryResult, now: dt.datetime) -> float | None:
    value = result.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - now).total_seconds(), 0.0)


class TasksService:
    """Cloud Tasks v2 (HTTP targets) on top of a clock and a deliverer.

    Run it on one event loop: `rpc_handlers()` for the gRPC server, `start()` before serving and
    `stop()` after. `reset()` forgets every task, tombstone and queue not given at construction.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        deliverer: Deliverer,
        signer: TokenSigner | None = None,
        tombstone_seconds: float = 3600.0,
        auto_create_queues: bool = False,
        queues: Iterable[str] = (),
    ) -> None:
        """Serve Cloud Tasks over `deliverer`, on `clock`.

        `tombstone_seconds` is how long the name of a finished or deleted task stays taken
        (ALREADY_EXISTS); `auto_create_queues` creates a missing queue on the first task instead of
        answering NOT_FOUND; `queues` are full queue paths created at start and after `reset()`.
        """
        if tombstone_seconds < 0:
            raise ValueError(f"tombstone_seconds must not be negative, got {tombstone_seconds}")
        self.clock = clock
        self.deliverer = deliverer
        self.signer = signer or TokenSigner("http://127.0.0.1")
        self.tombstone_seconds = tombstone_seconds
        self.auto_create_queues = auto_create_queues
        self.initial_queues = list(queues)
        for path in self.initial_queues:
            if _QUEUE_RE.fullmatch(path) is None:
                raise ValueError(f"queues: {path!r} is not a queue path like {_QUEUE_FORMAT}")
        self._queues: dict[str, _Queue] = {}
        self._tombstones: dict[str, dt.datetime] = {}
        self._tombstone_order: collections.deque[tuple[dt.datetime, str]] = collections.deque()
        self._operations: dict[str, Any] = {}
        self._operation_ids: dict[str, str] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._heap_keys = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lock = threading.RLock()
        self._stopped = False
        self._create_initial_queues()

    # lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop; queues created before start begin dispatching."""
        with self._lock:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self._stopped = False
            for queue in self._queues.values():
                self._request_pump(queue)

    async def stop(self) -> None:
        """Cancel the attempts in flight and every timer."""
        with self._lock:
            self._stopped = True
            for queue in self._queues.values():
                self._cancel_timer(queue)
            attempts = list(self._attempts)
        for attempt in attempts:
            attempt.cancel()
        if attempts:
            await asyncio.gather(*attempts, return_exceptions=True)

    def reset(self) -> None:
        """Forget every task, tombstone and operation; keep only the queues given at construction."""
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        for queue in self._queues.values():
            self._drop_queue(queue)
        self._queues.clear()
        self._tombstones.clear()
        self._tombstone_order.clear()
        self._operations.clear()
        self._operation_ids.clear()
        self._create_initial_queues()
        if self._loop is not None:
            for queue in self._queues.values():
                self._request_pump(queue)

    def add_queue(self, path: str) -> None:
        """Create the queue `path` with default settings unless it exists."""
        match = _QUEUE_RE.fullmatch(path)
        if match is None:
            raise ValueError(f"{path!r} is not a queue path like {_QUEUE_FORMAT}")
        with self._lock:
            if path not in self._queues:
                pb = Queue(name=path)
                _fill_queue_defaults(pb)
                self._queues[path] = _Queue(pb=pb, queue_id=match.group(2))

    def _create_initial_queues(self) -> None:
        for path in self.initial_queues:
            self.add_queue(path)

    @property
    def deliveries(self) -> list[DeliveryRecord]:
        """The attempts made for tasks, oldest first (when the deliverer keeps records)."""
        records: Iterable[DeliveryRecord] = getattr(self.deliverer, "records", ())
        return [record for record in records if "/tasks/" in record.source]

    def is_idle(self) -> bool:
        """No attempt in flight and no task due now in a running queue.

        A task held back by the queue's rate limit waits for the clock like a task scheduled later,
        so it does not count as busy.
        """
        with self._lock:
            return self._is_idle()

    def _is_idle(self) -> bool:
        if self._attempts:
            return False
        now = self.clock.now()
        for queue in self._queues.values():
            if not queue.running:
                continue
            if queue.pump_pending:
                return False
            if queue.timer_when is not None and queue.timer_when > now:
                continue
            for when, key, state in queue.heap:
                if state.heap_key == key and when <= now:
                    return False
        return True

    # gRPC plumbing ---------------------------------------------------------------------------------------------

    def rpc_handlers(self) -> list[grpc.GenericRpcHandler]:
        """The Cloud Tasks and long-running Operations services, as synchronous unary handlers.

        Each runs under the service's lock, on the event loop the service was started on (where
        `RunTask` starts its attempt).
        """
        tasks = {
            "ListQueues": (self.list_queues, tasks_v2.ListQueuesRequest, _ListQueuesResponse),
            "GetQueue": (self.get_queue, tasks_v2.GetQueueRequest, Queue),
            "CreateQueue": (self.create_queue, tasks_v2.CreateQueueRequest, Queue),
            "UpdateQueue": (self.update_queue, tasks_v2.UpdateQueueRequest, Queue),
            "DeleteQueue": (self.delete_queue, tasks_v2.DeleteQueueRequest, empty_pb2.Empty),
            "PurgeQueue": (self.purge_queue, tasks_v2.PurgeQueueRequest, Queue),
            "PauseQueue": (self.pause_queue, tasks_v2.PauseQueueRequest, Queue),
            "ResumeQueue": (self.resume_queue, tasks_v2.ResumeQueueRequest, Queue),
            "ListTasks": (self.list_tasks, tasks_v2.ListTasksRequest, _ListTasksResponse),
            "GetTask": (self.get_task, tasks_v2.GetTaskRequest, Task),
            "CreateTask": (self.create_task, tasks_v2.CreateTaskRequest, Task),
            "BatchCreateTasks": (self.batch_create_tasks, tasks_v2.BatchCreateTasksRequest, operations_pb2.Operation),
            "DeleteTask": (self.delete_task, tasks_v2.DeleteTaskRequest, empty_pb2.Empty),
            "RunTask": (self.run_task, tasks_v2.RunTaskRequest, Task),
        }
        operations = {
            "GetOperation": (self.get_operation, operations_pb2.GetOperationRequest, operations_pb2.Operation),
        }
        return [
            grpc.method_handlers_generic_handler(
                _SERVICE, {name: _handler(self._lock, *spec) for name, spec in tasks.items()}
            ),
            grpc.method_handlers_generic_handler(
                _OPERATIONS, {name: _handler(self._lock, *spec) for name, spec in operations.items()}
            ),
        ]

    # queues ----------------------------------------------------------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is not None:
            return queue
        if _QUEUE_RE.fullmatch(name) is None:
            raise _invalid(f"queue name {name!r} must be formatted like {_QUEUE_FORMAT}")
        raise _RpcError(grpc.StatusCode.NOT_FOUND, f"queue {name} does not exist")

    def list_queues(self, request: Any) -> Any:
        """ListQueues, sorted by name, with `state: PAUSED` / `state: RUNNING` filters."""
        if _LOCATION_RE.fullmatch(request.parent) is None:
            raise _invalid(
                f"parent {request.parent!r} must be formatted like projects/PROJECT_ID/locations/LOCATION_ID"
            )
        state_filter = None
        text = request.filter.replace(" ", "")
        if text:
            states = {"state:RUNNING": _RUNNING, "state:PAUSED": _PAUSED}
            if text not in states:
                raise _invalid(f"filter {request.filter!r} is not supported: use 'state: RUNNING' or 'state: PAUSED'")
            state_filter = states[text]
        prefix = request.parent + "/queues/"
        names = sorted(
            name
            for name, queue in self._queues.items()
            if name.startswith(prefix) and (state_filter is None or queue.pb.state == state_filter)
        )
        page, token = _page(names, request.page_size, request.page_token, lambda name: name)
        return _ListQueuesResponse(queues=[self._queues[name].pb for name in page], next_page_token=token)

    def get_queue(self, request: Any) -> Any:
        """GetQueue."""
        return self._queue(request.name).pb

    def create_queue(self, request: Any) -> Any:
        """CreateQueue: ALREADY_EXISTS when the name is taken."""
        if _LOCATION_RE.fullmatch(request.parent) is None:
            raise _invalid(
                f"parent {request.parent!r} must be formatted like projects/PROJECT_ID/locations/LOCATION_ID"
            )
        pb = Queue()
        pb.CopyFrom(request.queue)
        match = _QUEUE_RE.fullmatch(pb.name)
        if match is None or match.group(1) != request.parent:
            raise _invalid(f"queue.name {pb.name!r} must be formatted like {request.parent}/queues/QUEUE_ID")
        if pb.name in self._queues:
            raise _RpcError(grpc.StatusCode.ALREADY_EXISTS, f"queue {pb.name} already exists")
        _check_queue_config(pb)
        pb.state = _RUNNING
        pb.ClearField("purge_time")
        _fill_queue_defaults(pb)
        queue = self._queues[pb.name] = _Queue(pb=pb, queue_id=match.group(2))
        self._request_pump(queue)
        return pb

    def update_queue(self, request: Any) -> Any:
        """UpdateQueue with an optional field mask; creates the queue when it does not exist (as the API does)."""
        source = request.queue
        match = _QUEUE_RE.fullmatch(source.name)
        if match is None:
            raise _invalid(f"queue.name {source.name!r} must be formatted like {_QUEUE_FORMAT}")
        paths = list(request.update_mask.paths)
        for path in paths:
            if path not in _UPDATABLE_PATHS:
                raise _invalid(
                    f"update_mask path {path!r} cannot be updated; updatable: {', '.join(sorted(_UPDATABLE_PATHS))}"
                )
        queue = self._queues.get(source.name)
        if queue is None:
            self.add_queue(source.name)
            queue = self._queues[source.name]
        updated = Queue()
        updated.CopyFrom(queue.pb)
        if paths:
            request.update_mask.MergeMessage(source, updated, replace_message_field=True)
        else:
            for name in ("rate_limits", "retry_config", "http_target", "app_engine_routing_override"):
                updated.ClearField(name)
                if source.HasField(name):
                    getattr(updated, name).CopyFrom(getattr(source, name))
        updated.rate_limits.max_burst_size = 0
        _check_queue_config(updated)
        _fill_queue_defaults(updated)
        queue.pb = updated
        self._request_pump(queue)
        return updated

    def delete_queue(self, request: Any) -> Any:
        """DeleteQueue: its tasks go with it."""
        queue = self._queue(request.name)
        self._drop_queue(queue)
        del self._queues[request.name]
        return empty_pb2.Empty()

    def purge_queue(self, request: Any) -> Any:
        """PurgeQueue: every task is deleted (their names stay taken for the tombstone window)."""
        queue = self._queue(request.name)
        now = self.clock.now()
        for state in list(queue.tasks.values()):
            self._forget(state, now)
        queue.heap.clear()
        _set_time(queue.pb.purge_time, now)
        return queue.pb

    def pause_queue(self, request: Any) -> Any:
        """PauseQueue: nothing new is dispatched; attempts in flight finish."""
        queue = self._queue(request.name)
        queue.pb.state = _PAUSED
        return queue.pb

    def resume_queue(self, request: Any) -> Any:
        """ResumeQueue."""
        queue = self._queue(request.name)
        queue.pb.state = _RUNNING
        self._request_pump(queue)
        return queue.pb

    def _drop_queue(self, queue: _Queue) -> None:
        queue.deleted = True
        self._cancel_timer(queue)
        for state in queue.tasks.values():
            state.gone = True
        queue.tasks.clear()
        queue.heap.clear()

    # tasks -----------------------------------------------------------------------------------------------------

    def _task(self, name: str) -> _TaskState:
        queue_path, sep, task_id = name.rpartition("/tasks/")
        queue = self._queues.get(queue_path) if sep else None
        state = queue.tasks.get(task_id) if queue is not None else None
        if state is None:
            if not sep or _QUEUE_RE.fullmatch(queue_path) is None or _TASK_ID_RE.fullmatch(task_id) is None:
                raise _invalid(f"task name {name!r} must be formatted like {_QUEUE_FORMAT}/tasks/TASK_ID")
            raise _RpcError(grpc.StatusCode.NOT_FOUND, f"task {name} does not exist")
        return state

    def _view(self, state: _TaskState, view: int) -> Any:
        result = Task()
        result.CopyFrom(state.pb)
        if view != _VIEW_FULL:
            result.http_request.body = b""
        result.view = _VIEW_FULL if view == _VIEW_FULL else 1
        return result

    def create_task(self, request: Any) -> Any:
        """CreateTask."""
        return self._view(self._create(request.parent, request.task), request.response_view)

    def _create(self, parent: str, task: Any) -> _TaskState:
        queue = self._queues.get(parent)
        if queue is None:
            match = _QUEUE_RE.fullmatch(parent)
            if match is None:
                raise _invalid(f"parent {parent!r} must be a queue name formatted like {_QUEUE_FORMAT}")
            if not self.auto_create_queues:
                raise _RpcError(grpc.StatusCode.NOT_FOUND, f"queue {parent} does not exist; create it first")
            self.add_queue(parent)
            queue = self._queues[parent]
            self._request_pump(queue)
        now = self.clock.now()
        name = task.name
        if name:
            task_id = name[len(parent) + 7 :]
            if not name.startswith(parent) or name[len(parent) : len(parent) + 7] != "/tasks/":
                raise _invalid(f"task.name {name!r} must be formatted like {parent}/tasks/TASK_ID")
            if _TASK_ID_RE.fullmatch(task_id) is None:
                raise _invalid(
                    f"task id {task_id!r} is invalid: use 1 to 500 characters from letters, digits, '_' and '-'"
                )
            if task_id in queue.tasks or self._tombstoned(name, now):
                raise _RpcError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"task {name} already exists or existed recently (names stay taken for"
                    f" {self.tombstone_seconds:g} s after a task ends)",
                )
        else:
            task_id = str(random.getrandbits(63))
            while task_id in queue.tasks:
                task_id = str(random.getrandbits(63))
            name = f"{parent}/tasks/{task_id}"
        if not task.HasField("http_request"):
            if task.HasField("app_engine_http_request"):
                raise _RpcError(grpc.StatusCode.UNIMPLEMENTED, "the emulator delivers only HTTP targets (http_request)")
            raise _invalid("task.http_request is required")
        _check_http_request(task.http_request)
        if task.HasField("schedule_time"):
            try:
                when = _to_datetime(task.schedule_time)
            except (OverflowError, ValueError, OSError):
                raise _invalid("task.schedule_time is not a valid timestamp") from None
            if when - now > MAX_SCHEDULE_AHEAD:
                raise _invalid(
                    f"task.schedule_time {when.isoformat()} is more than 30 days ahead of now ({now.isoformat()})"
                )
        else:
            when = now
        if task.HasField("dispatch_deadline"):
            deadline = _seconds(task.dispatch_deadline)
            if not MIN_DEADLINE <= deadline <= MAX_DEADLINE:
                raise _invalid(f"task.dispatch_deadline must be between 15 s and 30 min, got {deadline:g} s")
        size = task.ByteSize()
        if size > MAX_TASK_BYTES:
            raise _invalid(f"task is {size} bytes, more than the {MAX_TASK_BYTES} bytes (1 MB) a task may have")

        pb = Task()
        pb.CopyFrom(task)
        pb.name = name
        if not pb.http_request.http_method:
            pb.http_request.http_method = 1
        if not pb.HasField("dispatch_deadline"):
            pb.dispatch_deadline.seconds = int(DEFAULT_DEADLINE)
        _set_time(pb.create_time, now)
        if when is now:
            pb.schedule_time.CopyFrom(pb.create_time)
        else:
            _set_time(pb.schedule_time, when)
        for cleared in ("dispatch_count", "response_count", "first_attempt", "last_attempt", "view"):
            pb.ClearField(cleared)
        state = _TaskState(pb=pb, queue=queue, task_id=task_id, when=when, seq=next(self._seq))
        queue.tasks[task_id] = state
        self._push(queue, state)
        return state

    def batch_create_tasks(self, request: Any) -> Any:
        """BatchCreateTasks: each request succeeds or fails on its own; the operation is done on return."""
        if request.request_id and request.request_id in self._operation_ids:
            return self._operations[self._operation_ids[request.request_id]]
        if len(request.requests) > MAX_BATCH:
            raise _invalid(f"requests holds {len(request.requests)} tasks; at most {MAX_BATCH} are allowed per call")
        if not request.requests:
            raise _invalid("requests must hold at least one CreateTaskRequest")
        self._queue(request.parent)
        started = self.clock.now()
        response = _BatchCreateTasksResponse()
        metadata = _BatchCreateTasksMetadata()
        _set_time(metadata.start_time, started)
        for index, item in enumerate(request.requests):
            try:
                if item.parent and item.parent != request.parent:
                    raise _invalid(f"requests[{index}].parent must equal parent {request.parent!r}")
                state = self._create(request.parent, item.task)
            except _RpcError as exc:
                metadata.failed_requests[index].CopyFrom(status_pb2.Status(code=exc.code.value[0], message=exc.message))
                continue
            response.tasks.append(self._view(state, item.response_view))
        _set_time(metadata.end_time, self.clock.now())
        if not metadata.failed_requests:
            metadata.state = 2
        elif response.tasks:
            metadata.state = 5
        else:
            metadata.state = 3
        location = request.parent.rpartition("/queues/")[0]
        operation = operations_pb2.Operation(name=f"{location}/operations/{uuid.uuid4().hex}", done=True)
        packed = any_pb2.Any()
        packed.Pack(metadata)
        operation.metadata.CopyFrom(packed)
        packed = any_pb2.Any()
        packed.Pack(response)
        operation.response.CopyFrom(packed)
        self._operations[operation.name] = operation
        if request.request_id:
            self._operation_ids[request.request_id] = operation.name
        return operation

    def get_operation(self, request: Any) -> Any:
        """GetOperation, for the operations that BatchCreateTasks returned."""
        operation = self._operations.get(request.name)
        if operation is None:
            raise _RpcError(grpc.StatusCode.NOT_FOUND, f"operation {request.name} does not exist")
        return operation

    def get_task(self, request: Any) -> Any:
        """GetTask."""
        return self._view(self._task(request.name), request.response_view)

    def list_tasks(self, request: Any) -> Any:
        """ListTasks in creation order, paged (page_size at most 1000)."""
        queue = self._queue(request.parent)
        states = list(queue.tasks.values())
        page, token = _page(states, request.page_size, request.page_token, lambda state: state.seq)
        return _ListTasksResponse(
            tasks=[self._view(state, request.response_view) for state in page], next_page_token=token
        )

    def delete_task(self, request: Any) -> Any:
        """DeleteTask: an attempt in flight is not interrupted, but the task will not be retried."""
        state = self._task(request.name)
        self._forget(state, self.clock.now())
        return empty_pb2.Empty()

    def run_task(self, request: Any) -> Any:
        """RunTask: dispatch now, whatever the schedule time, the queue state and the rate limits."""
        if self._loop is None:
            raise _RpcError(grpc.StatusCode.FAILED_PRECONDITION, "the emulator is not running")
        state = self._task(request.name)
        if state.running:
            raise _RpcError(grpc.StatusCode.FAILED_PRECONDITION, f"task {request.name} is being dispatched already")
        state.heap_key = -1
        self._start_attempt(state.queue, state)
        return self._view(state, request.response_view)

    # tombstones ------------------------------------------------------------------------------------------------

    def _tombstoned(self, name: str, now: dt.datetime) -> bool:
        expiry = self._tombstones.get(name)
        return expiry is not None and expiry > now

    def _forget(self, state: _TaskState, now: dt.datetime) -> None:
        """Remove a task for good and keep its name taken for the tombstone window."""
        if state.gone:
            return
        state.gone = True
        state.heap_key = -1
        state.queue.tasks.pop(state.task_id, None)
        if self.tombstone_seconds <= 0:
            return
        order = self._tombstone_order
        while order and order[0][0] <= now:
            expiry, name = order.popleft()
            if self._tombstones.get(name) == expiry:
                del self._tombstones[name]
        expiry = now + dt.timedelta(seconds=self.tombstone_seconds)
        self._tombstones[state.pb.name] = expiry
        order.append((expiry, state.pb.name))

    # dispatch --------------------------------------------------------------------------------------------------

    def _push(self, queue: _Queue, state: _TaskState) -> None:
        key = next(self._heap_keys)
        state.heap_key = key
        heapq.heappush(queue.heap, (state.when, key, state))
        self._request_pump(queue)

    def _request_pump(self, queue: _Queue) -> None:
        """Run `_pump(queue)` soon on the loop, once however often it is asked for (lock held)."""
        if queue.pump_pending or self._loop is None or self._stopped or not queue.running:
            return
        queue.pump_pending = True
        if self._loop_thread == threading.get_ident():
            self._loop.call_soon(self._pump, queue)
        else:
            self._loop.call_soon_threadsafe(self._pump, queue)

    def _cancel_timer(self, queue: _Queue) -> None:
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
            queue.timer_when = None

    def _wake_at(self, queue: _Queue, when: dt.datetime) -> None:
        if queue.timer is not None and queue.timer_when is not None and queue.timer_when <= when:
            return
        self._cancel_timer(queue)
        queue.timer_when = when
        queue.timer = call_at(self.clock, when, lambda: self._on_timer(queue))

    def _on_timer(self, queue: _Queue) -> None:
        with self._lock:
            queue.timer = None
            queue.timer_when = None
            self._request_pump(queue)

    def _pump(self, queue: _Queue) -> None:
        """Start every attempt the queue allows now; set a timer for the next possible one."""
        with self._lock:
            self._pump_locked(queue)

    def _pump_locked(self, queue: _Queue) -> None:
        queue.pump_pending = False
        if queue.deleted or self._stopped or not queue.running:
            return
        heap = queue.heap
        if not heap:
            return
        now = self.clock.now()
        rate = queue.pb.rate_limits
        burst = float(rate.max_burst_size)
        per_second = rate.max_dispatches_per_second
        if queue.refilled is None:
            queue.tokens = burst
        else:
            queue.tokens = min(burst, queue.tokens + (now - queue.refilled).total_seconds() * per_second)
        queue.refilled = now
        limit = rate.max_concurrent_dispatches
        while heap:
            when, key, state = heap[0]
            if state.heap_key != key:
                heapq.heappop(heap)
                continue
            if when > now:
                self._wake_at(queue, when)
                return
            if queue.inflight >= limit:
                return
            if queue.tokens < 1.0:
                self._wake_at(queue, now + dt.timedelta(seconds=(1.0 - queue.tokens) / per_second))
                return
            queue.tokens -= 1.0
            heapq.heappop(heap)
            state.heap_key = -1
            self._start_attempt(queue, state)

    def _start_attempt(self, queue: _Queue, state: _TaskState) -> None:
        """Count the attempt on the task now (as the API shows it), then deliver in its own asyncio task."""
        now = self.clock.now()
        pb = state.pb
        http = pb.http_request
        headers = state.static_headers
        if headers is None:
            headers = state.static_headers = self._static_headers(queue, state)
        headers = dict(headers)
        headers["X-CloudTasks-TaskRetryCount"] = str(pb.dispatch_count)
        headers["X-CloudTasks-TaskExecutionCount"] = str(state.execution_count)
        headers["X-CloudTasks-TaskETA"] = f"{state.when.timestamp():.6f}"
        if state.previous_response is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(state.previous_response)
        if state.retry_reason is not None:
            headers["X-CloudTasks-TaskRetryReason"] = state.retry_reason
        if http.HasField("oidc_token"):
            token = http.oidc_token
            headers["Authorization"] = "Bearer " + self.signer.token(
                audience=token.audience or http.url, email=token.service_account_email, now=now
            )
        elif http.HasField("oauth_token"):
            headers["Authorization"] = f"Bearer emulator-oauth-token.{http.oauth_token.service_account_email}"
        attempt = pb.last_attempt
        attempt.Clear()
        attempt.schedule_time.CopyFrom(pb.schedule_time)
        _set_time(attempt.dispatch_time, now)
        if state.first_dispatch is None:
            state.first_dispatch = now
            _set_time(pb.first_attempt.dispatch_time, now)
        pb.dispatch_count += 1
        state.running = True
        queue.inflight += 1
        delivery = DeliveryRequest(
            method=_METHODS.get(http.http_method, "POST"),
            url=http.url,
            headers=headers,
            body=http.body,
            deadline=_seconds(pb.dispatch_deadline),
            source=pb.name,
            attempt=pb.dispatch_count,
        )
        assert self._loop is not None
        attempt_task = self._loop.create_task(self._attempt(queue, state, delivery))
        self._attempts.add(attempt_task)
        attempt_task.add_done_callback(self._attempts.discard)

    def _static_headers(self, queue: _Queue, state: _TaskState) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, value in state.pb.http_request.headers.items():
            if not key.lower().startswith(_RESERVED_HEADERS) and key.lower() != "authorization":
                headers[key] = value
        headers["User-Agent"] = "Google-Cloud-Tasks"
        headers["X-CloudTasks-QueueName"] = queue.queue_id
        headers["X-CloudTasks-TaskName"] = state.task_id
        return headers

    async def _attempt(self, queue: _Queue, state: _TaskState, delivery: DeliveryRequest) -> None:
        result: DeliveryResult | None = None
        try:
            result = await self.deliverer.deliver(delivery)
        finally:
            with self._lock:
                queue.inflight -= 1
                state.running = False
                try:
                    if result is not None:
                        self._settle(queue, state, result)
                except Exception:  # noqa: BLE001 - logged, and the task is kept rather than lost
                    logger.exception("emulator: could not settle the attempt of %s; the task is kept", state.pb.name)
                    if not state.gone:
                        self._push(queue, state)
                # the freed slot is refilled now rather than on a later loop iteration
                if not (queue.deleted or self._stopped) and queue.running:
                    self._pump_locked(queue)

    def _settle(self, queue: _Queue, state: _TaskState, result: DeliveryResult) -> None:
        """Record the outcome on the task, then delete it or schedule its retry."""
        if state.gone or queue.deleted:
            return
        now = self.clock.now()
        pb = state.pb
        attempt = pb.last_attempt
        status = result.status
        if status is not None:
            pb.response_count += 1
            _set_time(attempt.response_time, now)
            attempt.response_status.code = _rpc_code(status)
            attempt.response_status.message = f"HTTP status code {status}"
            if status < 500:
                state.execution_count += 1
            state.previous_response = status
        else:
            attempt.response_status.code = code_pb2.DEADLINE_EXCEEDED if result.timed_out else code_pb2.UNAVAILABLE
            attempt.response_status.message = result.error or "no response"
        if result.ok:
            self._forget(state, now)
            return
        retry = queue.pb.retry_config
        if self._exhausted(retry, pb.dispatch_count, state, now):
            logger.warning(
                "task %s gave up after %d attempt(s): %s",
                pb.name,
                pb.dispatch_count,
                status if status is not None else result.error,
            )
            self._forget(state, now)
            return
        delay = backoff_seconds(retry, pb.dispatch_count - 1)
        if status in (429, 503):
            retry_after = _retry_after(result, now)
            if retry_after is not None:
                delay = max(delay, retry_after)
        state.retry_reason = (
            f"HTTP {status}" if status is not None else ("DEADLINE_EXCEEDED" if result.timed_out else "UNAVAILABLE")
        )
        state.when = now + dt.timedelta(seconds=delay)
        _set_time(pb.schedule_time, state.when)
        self._push(queue, state)

    @staticmethod
    def _exhausted(retry: Any, attempts: int, state: _TaskState, now: dt.datetime) -> bool:
        max_duration = _seconds(retry.max_retry_duration)
        duration_reached = (
            max_duration > 0
            and state.first_dispatch is not None
            and (now - state.first_dispatch).total_seconds() >= max_duration
        )
        if retry.max_attempts == -1:
            return duration_reached
        attempts_reached = attempts >= int(retry.max_attempts)
        if max_duration <= 0:
            return attempts_reached
        return attempts_reached and duration_reached


@functools.lru_cache(maxsize=4096)
def _url_problem(url: str) -> str | None:
    """Why Cloud Tasks would refuse `url`, or None; cached because tasks of one app share a few URLs."""
    if not url:
        return "task.http_request.url is required"
    if len(url) > MAX_URL_LENGTH:
        return f"task.http_request.url is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:
        return f"task.http_request.url {url!r} is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https") or not hostname:
        return f"task.http_request.url {url!r} must be an absolute http:// or https:// URL"
    return None


def _check_http_request(http: Any) -> None:
    problem = _url_problem(http.url)
    if problem is not None:
        raise _invalid(problem)
    method = _METHODS.get(http.http_method or 1)
    if method is None:
        raise _invalid(f"task.http_request.http_method {http.http_method} is not a valid HttpMethod")
    if http.body and method not in _BODY_METHODS:
        raise _invalid(f"task.http_request.body is only allowed with POST, PUT or PATCH, not {method}")
    header_bytes = sum(len(key) + len(value) for key, value in http.headers.items()) if http.headers else 0
    if header_bytes >= MAX_HEADER_BYTES:
        raise _invalid(f"task.http_request.headers total {header_bytes} bytes; they must stay under 80 KB")
    if http.HasField("oidc_token") and not http.oidc_token.service_account_email:
        raise _invalid("task.http_request.oidc_token.service_account_email is required")
    if http.HasField("oauth_token") and not http.oauth_token.service_account_email:
        raise _invalid("task.http_request.oauth_token.service_account_email is required")


def _page(items: list[Any], page_size: int, page_token: str, key: Callable[[Any], Any]) -> tuple[list[Any], str]:
    """One page of `items` (sorted by `key`, an int or a str) after the item whose key is `page_token`."""
    if page_size < 0:
        raise _invalid(f"page_size must not be negative, got {page_size}")
    size = min(page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    start = 0
    if page_token and items:
        kind = type(key(items[0]))
        try:
            after = kind(page_token)
        except ValueError:
            raise _invalid(f"page_token {page_token!r} is not a token this service returned") from None
        start = len(items)
        for index, item in enumerate(items):
            if key(item) > after:
                start = index
                break
    page = items[start : start + size]
    token = str(key(page[-1])) if page and start + size < len(items) else ""
    return page, token


def _handler(
    lock: threading.RLock, method: Callable[[Any], Any], request_type: Any, response_type: Any
) -> grpc.RpcMethodHandler:
    """A unary handler for a synchronous server: parses the request itself (undecodable bytes get
    INVALID_ARGUMENT, not UNKNOWN), then calls `method` and serializes its answer under `lock`.
    """
    request_pb = request_type.pb() if hasattr(request_type, "pb") else request_type
    parse = request_pb.FromString
    type_name = request_pb.DESCRIPTOR.name
    serialize = response_type.SerializeToString

    def handle(payload: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = parse(payload)
        except DecodeError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {type_name}")
        try:
            with lock:
                return bytes(serialize(method(request)))
        except _RpcError as exc:
            context.abort(exc.code, exc.message)
        except Exception as exc:  # noqa: BLE001 - logged and answered as INTERNAL; the server lives on
            logger.exception("emulator: internal error in %s", getattr(method, "__name__", method))
            context.abort(grpc.StatusCode.INTERNAL, f"emulator internal error: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable: context.abort raises")

    return grpc.unary_unary_rpc_method_handler(handle)
