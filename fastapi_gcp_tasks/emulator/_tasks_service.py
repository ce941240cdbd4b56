"""The Cloud Tasks v2 service of the emulator: the RPCs over queues, tasks and batch operations.

The handlers work on the raw protobuf messages (no proto-plus wrapping) and do no I/O: they validate
(`_tasks_validation.py`), change the state the dispatcher keeps (`_tasks_dispatch.py`) and answer.
They run on the event loop of the emulator's gRPC server, as do the dispatcher's timers and attempts
(the threading model of `_rpc.py`).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import random
import uuid
from collections.abc import Iterable
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.longrunning import operations_pb2  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import empty_pb2
from google.rpc import status_pb2  # type: ignore[import-untyped, unused-ignore]

from fastapi_gcp_tasks._limits import BATCH_CREATE_LIMIT, DEFAULT_DISPATCH_DEADLINE, LIST_TASKS_PAGE_SIZE
from fastapi_gcp_tasks.emulator._oidc import TokenSigner
from fastapi_gcp_tasks.emulator._rpc import POST, Method, RpcError, grpc_handlers, invalid
from fastapi_gcp_tasks.emulator._tasks_dispatch import Dispatcher, QueueState, TaskState
from fastapi_gcp_tasks.emulator._tasks_validation import (
    LIST_QUEUES_PAGE_SIZE,
    LIST_TASKS_PAGE_BYTES,
    LOCATION_RE,
    PAGE_TOKEN_LIFETIME,
    PAUSED,
    QUEUE_FORMAT,
    QUEUE_RE,
    RUNNING,
    TASK_ID_RE,
    UPDATABLE_PATHS,
    PageTokens,
    check_http_request,
    check_queue_config,
    check_task,
    fill_queue_defaults,
    page,
    set_time,
    stored_url,
)
from fastapi_gcp_tasks.emulator._types import Clock, Deliverer, DeliveryRecord

__all__ = ["TasksService"]

Task: Any = tasks_v2.Task.pb()
Queue: Any = tasks_v2.Queue.pb()
_BatchCreateTasksResponse: Any = tasks_v2.BatchCreateTasksResponse.pb()
_BatchCreateTasksMetadata: Any = tasks_v2.BatchCreateTasksMetadata.pb()
_BatchDeleteTasksMetadata: Any = tasks_v2.BatchDeleteTasksMetadata.pb()
_BATCH_DELETE_LIMIT = 1000
"""BatchDeleteTasksRequest.names: "A maximum of 1000 tasks can be deleted in a batch"."""
_ListQueuesResponse: Any = tasks_v2.ListQueuesResponse.pb()
_ListTasksResponse: Any = tasks_v2.ListTasksResponse.pb()

_SERVICE = "google.cloud.tasks.v2.CloudTasks"
_OPERATIONS = "google.longrunning.Operations"
_VIEW_FULL = 2
_KEPT_OPERATIONS = 1000
_USER_AGENT = "Google-Cloud-Tasks"
"""The `User-Agent` of every attempt, which the stored task's headers show too (recorded from the service)."""
_MASKLESS_FIELDS = sorted({path.split(".", 1)[0] for path in UPDATABLE_PATHS})
"""What UpdateQueue replaces without a field mask: "If empty, then all fields will be updated"."""
"""BatchCreateTasks operations (and their `request_id`s) kept for GetOperation and de-duplication; older ones
are forgotten, so the memory they take stays bounded however many batches a long-running emulator sees."""


class TasksService(Dispatcher):
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
        queue_tombstone_seconds: float = 3600.0,
        auto_create_queues: bool = False,
        queues: Iterable[str] = (),
    ) -> None:
        """Serve Cloud Tasks over `deliverer`, on `clock`.

        `tombstone_seconds` is how long the name of a finished or deleted task stays taken
        (ALREADY_EXISTS); `queue_tombstone_seconds` how long a deleted queue's name cannot be used again
        (FAILED_PRECONDITION; DeleteQueue documents "a tombstone window of up to 3 days", 0 allows it at
        once); `auto_create_queues` creates a missing queue on the first task instead of answering
        NOT_FOUND; `queues` are full queue paths created at start and after `reset()`.
        """
        for name, value in (
            ("tombstone_seconds", tombstone_seconds),
            ("queue_tombstone_seconds", queue_tombstone_seconds),
        ):
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")
        super().__init__(
            clock=clock,
            deliverer=deliverer,
            signer=signer or TokenSigner("http://127.0.0.1"),
            tombstone_seconds=tombstone_seconds,
        )
        self.queue_tombstone_seconds = queue_tombstone_seconds
        self._queue_tombstones: dict[str, dt.datetime] = {}
        self._page_tokens = PageTokens(lifetime=PAGE_TOKEN_LIFETIME)
        self.auto_create_queues = auto_create_queues
        self.initial_queues = list(queues)
        for path in self.initial_queues:
            if QUEUE_RE.fullmatch(path) is None:
                raise ValueError(f"queues: {path!r} is not a queue path like {QUEUE_FORMAT}")
        self._operations: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._operation_ids: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._create_initial_queues()

    # lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind to the running loop; queues created before start begin dispatching."""
        self._loop = asyncio.get_running_loop()
        self._stopped = False
        for queue in self._queues.values():
            self._request_pump(queue)

    async def stop(self) -> None:
        """Cancel the attempts in flight and every timer."""
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
        for queue in self._queues.values():
            self._drop_queue(queue)
        self._queues.clear()
        self._tombstones.clear()
        self._tombstone_order.clear()
        self._queue_tombstones.clear()
        self._operations.clear()
        self._operation_ids.clear()
        self._create_initial_queues()
        if self._loop is not None:
            for queue in self._queues.values():
                self._request_pump(queue)

    def add_queue(self, path: str) -> None:
        """Create the queue `path` with default settings unless it exists."""
        match = QUEUE_RE.fullmatch(path)
        if match is None:
            raise ValueError(f"{path!r} is not a queue path like {QUEUE_FORMAT}")
        if path not in self._queues:
            pb = Queue(name=path)
            fill_queue_defaults(pb)
            self._queues[path] = QueueState(pb=pb, queue_id=match.group(2))

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

    def methods(self) -> list[Method]:
        """The Cloud Tasks and long-running Operations RPCs, for the gRPC server and the REST gateway alike.

        They are synchronous and run on the event loop the service was started on (where `RunTask` starts
        its attempt).
        """
        tasks = {
            "ListQueues": (self.list_queues, tasks_v2.ListQueuesRequest),
            "GetQueue": (self.get_queue, tasks_v2.GetQueueRequest),
            "CreateQueue": (self.create_queue, tasks_v2.CreateQueueRequest),
            "UpdateQueue": (self.update_queue, tasks_v2.UpdateQueueRequest),
            "DeleteQueue": (self.delete_queue, tasks_v2.DeleteQueueRequest),
            "PurgeQueue": (self.purge_queue, tasks_v2.PurgeQueueRequest),
            "PauseQueue": (self.pause_queue, tasks_v2.PauseQueueRequest),
            "ResumeQueue": (self.resume_queue, tasks_v2.ResumeQueueRequest),
            "ListTasks": (self.list_tasks, tasks_v2.ListTasksRequest),
            "GetTask": (self.get_task, tasks_v2.GetTaskRequest),
            "CreateTask": (self.create_task, tasks_v2.CreateTaskRequest),
            "BatchCreateTasks": (self.batch_create_tasks, tasks_v2.BatchCreateTasksRequest),
            "BatchDeleteTasks": (self.batch_delete_tasks, tasks_v2.BatchDeleteTasksRequest),
            "DeleteTask": (self.delete_task, tasks_v2.DeleteTaskRequest),
            "RunTask": (self.run_task, tasks_v2.RunTaskRequest),
        }
        return [
            *(Method(_SERVICE, name, call, request) for name, (call, request) in tasks.items()),
            Method(_OPERATIONS, "GetOperation", self.get_operation, operations_pb2.GetOperationRequest),
        ]

    def rpc_handlers(self) -> list[grpc.GenericRpcHandler]:
        """`methods()` as gRPC handlers."""
        return grpc_handlers(self.methods())

    # queues ----------------------------------------------------------------------------------------------------

    def _queue(self, name: str) -> QueueState:
        queue = self._queues.get(name)
        if queue is not None:
            return queue
        if QUEUE_RE.fullmatch(name) is None:
            raise invalid(f"queue name {name!r} must be formatted like {QUEUE_FORMAT}")
        raise RpcError(grpc.StatusCode.NOT_FOUND, f"queue {name} does not exist")

    def list_queues(self, request: Any) -> Any:
        """ListQueues, sorted by name, with `state: PAUSED` / `state: RUNNING` filters."""
        if LOCATION_RE.fullmatch(request.parent) is None:
            raise invalid(f"parent {request.parent!r} must be formatted like projects/PROJECT_ID/locations/LOCATION_ID")
        state_filter = None
        text = request.filter.replace(" ", "")
        if text:
            states = {"state:RUNNING": RUNNING, "state:PAUSED": PAUSED}
            if text not in states:
                raise invalid(f"filter {request.filter!r} is not supported: use 'state: RUNNING' or 'state: PAUSED'")
            state_filter = states[text]
        now = self.clock.now()
        binding = f"ListQueues {request.parent} {text}"
        after = self._page_tokens.read(request.page_token, binding, now) if request.page_token else None
        prefix = request.parent + "/queues/"
        names = sorted(
            name
            for name, queue in self._queues.items()
            if name.startswith(prefix) and (state_filter is None or queue.pb.state == state_filter)
        )
        items, more = page(names, request.page_size, after, lambda name: name, max_size=LIST_QUEUES_PAGE_SIZE)
        token = self._page_tokens.issue(binding, items[-1], now) if more else ""
        return _ListQueuesResponse(queues=[self._queues[name].pb for name in items], next_page_token=token)

    def get_queue(self, request: Any) -> Any:
        """GetQueue."""
        return self._queue(request.name).pb

    def create_queue(self, request: Any) -> Any:
        """CreateQueue: ALREADY_EXISTS when the name is taken."""
        if LOCATION_RE.fullmatch(request.parent) is None:
            raise invalid(f"parent {request.parent!r} must be formatted like projects/PROJECT_ID/locations/LOCATION_ID")
        pb = Queue()
        pb.CopyFrom(request.queue)
        match = QUEUE_RE.fullmatch(pb.name)
        if match is None or match.group(1) != request.parent:
            raise invalid(f"queue.name {pb.name!r} must be formatted like {request.parent}/queues/QUEUE_ID")
        if pb.name in self._queues:
            raise RpcError(grpc.StatusCode.ALREADY_EXISTS, f"queue {pb.name} already exists")
        self._check_not_recently_deleted(pb.name)
        check_queue_config(pb)
        pb.state = RUNNING
        pb.ClearField("purge_time")
        fill_queue_defaults(pb)
        queue = self._queues[pb.name] = QueueState(pb=pb, queue_id=match.group(2))
        self._request_pump(queue)
        return pb

    def update_queue(self, request: Any) -> Any:
        """UpdateQueue with an optional field mask; creates the queue when it does not exist (as the API does)."""
        source = request.queue
        match = QUEUE_RE.fullmatch(source.name)
        if match is None:
            raise invalid(f"queue.name {source.name!r} must be formatted like {QUEUE_FORMAT}")
        paths = list(request.update_mask.paths)
        for path in paths:
            if path not in UPDATABLE_PATHS:
                raise invalid(
                    f"update_mask path {path!r} cannot be updated; updatable: {', '.join(sorted(UPDATABLE_PATHS))}"
                )
        queue = self._queues.get(source.name)
        updated = Queue()
        if queue is None:
            updated.name = source.name
            fill_queue_defaults(updated)
        else:
            updated.CopyFrom(queue.pb)
        if paths:
            request.update_mask.MergeMessage(source, updated, replace_message_field=True)
        else:
            for name in _MASKLESS_FIELDS:
                updated.ClearField(name)
                if source.HasField(name):
                    getattr(updated, name).CopyFrom(getattr(source, name))
        updated.rate_limits.max_burst_size = 0
        check_queue_config(updated)
        fill_queue_defaults(updated)
        if queue is None:  # only now that the whole request is valid
            self._check_not_recently_deleted(source.name)
            queue = self._queues[source.name] = QueueState(pb=updated, queue_id=match.group(2))
        queue.pb = updated
        self._request_pump(queue)
        return updated

    def delete_queue(self, request: Any) -> Any:
        """DeleteQueue: its tasks go with it."""
        queue = self._queue(request.name)
        self._drop_queue(queue)
        del self._queues[request.name]
        if self.queue_tombstone_seconds > 0:
            now = self.clock.now()
            self._queue_tombstones = {name: end for name, end in self._queue_tombstones.items() if end > now}
            self._queue_tombstones[request.name] = now + dt.timedelta(seconds=self.queue_tombstone_seconds)
        return empty_pb2.Empty()

    def _check_not_recently_deleted(self, name: str) -> None:
        """A deleted queue's name stays unusable for a while: FAILED_PRECONDITION (recorded from the service)."""
        end = self._queue_tombstones.get(name)
        if end is not None and end > self.clock.now():
            raise RpcError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"queue {name} was deleted recently; its name cannot be used again until {end.isoformat()}"
                f" ({self.queue_tombstone_seconds:g} s after its deletion)",
            )

    def purge_queue(self, request: Any) -> Any:
        """PurgeQueue: every task is deleted (their names stay taken for the tombstone window)."""
        queue = self._queue(request.name)
        now = self.clock.now()
        for state in list(queue.tasks.values()):
            self._forget(state, now)
        queue.heap.clear()
        set_time(queue.pb.purge_time, now)
        return queue.pb

    def pause_queue(self, request: Any) -> Any:
        """PauseQueue: nothing new is dispatched; attempts in flight finish."""
        queue = self._queue(request.name)
        queue.pb.state = PAUSED
        return queue.pb

    def resume_queue(self, request: Any) -> Any:
        """ResumeQueue."""
        queue = self._queue(request.name)
        queue.pb.state = RUNNING
        self._request_pump(queue)
        return queue.pb

    def _drop_queue(self, queue: QueueState) -> None:
        queue.deleted = True
        self._cancel_timer(queue)
        for state in queue.tasks.values():
            state.gone = True
        queue.tasks.clear()
        queue.heap.clear()

    # tasks -----------------------------------------------------------------------------------------------------

    def _task(self, name: str) -> TaskState:
        queue_path, sep, task_id = name.rpartition("/tasks/")
        queue = self._queues.get(queue_path) if sep else None
        state = queue.tasks.get(task_id) if queue is not None else None
        if state is None:
            if not sep or QUEUE_RE.fullmatch(queue_path) is None or TASK_ID_RE.fullmatch(task_id) is None:
                raise invalid(f"task name {name!r} must be formatted like {QUEUE_FORMAT}/tasks/TASK_ID")
            if self._tombstoned(name, self.clock.now()):  # recorded from the service: it says so
                raise RpcError(grpc.StatusCode.NOT_FOUND, f"task {name} does not exist; it existed recently")
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"task {name} does not exist")
        return state

    def _view(self, state: TaskState, view: int) -> Any:
        result = Task()
        result.CopyFrom(state.pb)
        if view != _VIEW_FULL:
            result.http_request.body = b""
        result.view = _VIEW_FULL if view == _VIEW_FULL else 1
        return result

    def create_task(self, request: Any) -> Any:
        """CreateTask."""
        return self._view(self._create(request.parent, request.task), request.response_view)

    def _queue_to_create_in(self, parent: str) -> QueueState | None:
        """The queue a new task goes to; None when it is missing and `auto_create_queues` will create it.

        Creates nothing: the caller creates the queue once the whole task is known to be valid.
        """
        queue = self._queues.get(parent)
        if queue is None:
            if QUEUE_RE.fullmatch(parent) is None:
                raise invalid(f"parent {parent!r} must be a queue name formatted like {QUEUE_FORMAT}")
            if not self.auto_create_queues:
                raise RpcError(grpc.StatusCode.NOT_FOUND, f"queue {parent} does not exist; create it first")
        return queue

    def _create(self, parent: str, task: Any) -> TaskState:
        queue = self._queue_to_create_in(parent)
        taken: dict[str, TaskState] = queue.tasks if queue is not None else {}
        now = self.clock.now()
        name = task.name
        if name:
            task_id = name[len(parent) + 7 :]
            if not name.startswith(parent) or name[len(parent) : len(parent) + 7] != "/tasks/":
                raise invalid(f"task.name {name!r} must be formatted like {parent}/tasks/TASK_ID")
            if TASK_ID_RE.fullmatch(task_id) is None:
                raise invalid(
                    f"task id {task_id!r} is invalid: use 1 to 500 characters from letters, digits, '_' and '-'"
                )
            if task_id in taken or self._tombstoned(name, now):
                raise RpcError(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"task {name} already exists or existed recently (names stay taken for"
                    f" {self.tombstone_seconds:g} s after a task ends)",
                )
        else:
            task_id = str(random.getrandbits(63))
            while task_id in taken:
                task_id = str(random.getrandbits(63))
            name = f"{parent}/tasks/{task_id}"
        if not task.HasField("http_request"):
            if task.HasField("app_engine_http_request"):
                raise RpcError(grpc.StatusCode.UNIMPLEMENTED, "the emulator delivers only HTTP targets (http_request)")
            raise invalid("task.http_request is required")
        check_http_request(task.http_request)
        url = stored_url(task.http_request.url)
        when = check_task(task, now)

        pb = Task()
        pb.CopyFrom(task)
        pb.name = name
        http = pb.http_request
        http.url = url
        for header in [header for header in http.headers if header.lower() == "user-agent"]:
            del http.headers[header]
        http.headers["User-Agent"] = _USER_AGENT
        if not pb.http_request.http_method:
            pb.http_request.http_method = POST
        if not pb.HasField("dispatch_deadline"):
            pb.dispatch_deadline.seconds = int(DEFAULT_DISPATCH_DEADLINE)
        # Task field comments: "dispatch_deadline will be truncated to the nearest millisecond", "create_time
        # will be truncated to the nearest second", "schedule_time will be truncated to the nearest microsecond"
        pb.dispatch_deadline.nanos -= pb.dispatch_deadline.nanos % 1_000_000
        set_time(pb.create_time, now, whole_seconds=True)
        set_time(pb.schedule_time, when)
        for cleared in ("dispatch_count", "response_count", "first_attempt", "last_attempt", "view"):
            pb.ClearField(cleared)
        if queue is None:  # auto_create_queues: the task is valid, so its queue may now exist
            self.add_queue(parent)
            queue = self._queues[parent]
            self._request_pump(queue)
        state = TaskState(pb=pb, queue=queue, task_id=task_id, when=when, seq=next(self._seq))
        queue.tasks[task_id] = state
        self._push(queue, state)
        return state

    def _known_operation(self, request_id: str) -> Any | None:
        """The operation a batch call with `request_id` returned already, now the most recent one; None if none."""
        if not request_id:
            return None
        known = self._operations.get(self._operation_ids.pop(request_id, ""))
        if known is not None:
            self._operation_ids[request_id] = known.name
            self._operations.move_to_end(known.name)
        return known

    def _operation(self, parent: str, request_id: str, metadata: Any, response: Any, error: Any = None) -> Any:
        """A finished long-running operation of a batch call, kept for GetOperation and `request_id` replays."""
        location = parent.rpartition("/queues/")[0]
        operation = operations_pb2.Operation(name=f"{location}/operations/{uuid.uuid4().hex}", done=True)
        operation.metadata.Pack(metadata)
        if error is not None:
            operation.error.CopyFrom(error)
        else:
            operation.response.Pack(response)
        self._operations[operation.name] = operation
        if request_id:
            self._operation_ids[request_id] = operation.name
        while len(self._operations) > _KEPT_OPERATIONS:
            self._operations.popitem(last=False)
        while len(self._operation_ids) > _KEPT_OPERATIONS:
            self._operation_ids.popitem(last=False)
        return operation

    def batch_create_tasks(self, request: Any) -> Any:
        """BatchCreateTasks: each request succeeds or fails on its own; the operation is done on return."""
        known = self._known_operation(request.request_id)
        if known is not None:  # the same request again: the same operation
            return known
        if len(request.requests) > BATCH_CREATE_LIMIT:
            raise invalid(
                f"requests holds {len(request.requests)} tasks; at most {BATCH_CREATE_LIMIT} are allowed per call"
            )
        if not request.requests:
            raise invalid("requests must hold at least one CreateTaskRequest")
        self._queue_to_create_in(request.parent)  # checks the parent; a missing queue comes with the first valid task
        for index, item in enumerate(request.requests):
            # "The queue specified in parent field of each CreateTaskRequest will be the same. This validation
            # happens on the client side as well as in the handler": the whole call is refused
            if item.parent and item.parent != request.parent:
                raise invalid(f"requests[{index}].parent {item.parent!r} must equal parent {request.parent!r}")
        started = self.clock.now()
        response = _BatchCreateTasksResponse()
        metadata = _BatchCreateTasksMetadata()
        set_time(metadata.start_time, started)
        for index, item in enumerate(request.requests):
            try:
                state = self._create(request.parent, item.task)
            except RpcError as exc:
                metadata.failed_requests[index].CopyFrom(status_pb2.Status(code=exc.code.value[0], message=exc.message))
                continue
            response.tasks.append(self._view(state, item.response_view))
        set_time(metadata.end_time, self.clock.now())
        if not metadata.failed_requests:
            metadata.state = 2
        elif response.tasks:
            metadata.state = 5
        else:
            metadata.state = 3
        return self._operation(request.parent, request.request_id, metadata, response)

    def batch_delete_tasks(self, request: Any) -> Any:
        """BatchDeleteTasks: "a non-atomic operation: if deletion fails for some tasks, it can still succeed for
        others"; at most 1000 names; when none succeeds the operation's error is ABORTED."""
        known = self._known_operation(request.request_id)
        if known is not None:
            return known
        self._queue(request.parent)  # NOT_FOUND for the whole call
        if not request.names:
            raise invalid("names must hold at least one task name")
        if len(request.names) > _BATCH_DELETE_LIMIT:
            raise invalid(f"names holds {len(request.names)} tasks; at most {_BATCH_DELETE_LIMIT} per call")
        now = self.clock.now()
        metadata = _BatchDeleteTasksMetadata()
        set_time(metadata.start_time, now)
        for index, name in enumerate(request.names):
            try:
                if not name.startswith(request.parent + "/tasks/"):
                    raise invalid(f"names[{index}] {name!r} is not a task of {request.parent}")
                state = self._task(name)
            except RpcError as exc:
                metadata.failed_requests[index].CopyFrom(status_pb2.Status(code=exc.code.value[0], message=exc.message))
                continue
            self._forget(state, now)
        set_time(metadata.end_time, self.clock.now())
        failed = len(metadata.failed_requests)
        metadata.state = 2 if not failed else 3
        error = None
        if failed == len(request.names):
            error = status_pb2.Status(
                code=grpc.StatusCode.ABORTED.value[0],
                message="None of the requests succeeded, refer to BatchDeleteTasksMetadata.failed_requests for"
                " individual error details",
            )
        return self._operation(request.parent, request.request_id, metadata, empty_pb2.Empty(), error)

    def get_operation(self, request: Any) -> Any:
        """GetOperation, for the operations that BatchCreateTasks returned."""
        operation = self._operations.get(request.name)
        if operation is None:
            raise RpcError(grpc.StatusCode.NOT_FOUND, f"operation {request.name} does not exist")
        return operation

    def get_task(self, request: Any) -> Any:
        """GetTask."""
        return self._view(self._task(request.name), request.response_view)

    def list_tasks(self, request: Any) -> Any:
        """ListTasks in creation order, paged: at most 1000 tasks, and fewer when they would exceed
        `LIST_TASKS_PAGE_BYTES` (the proto: "Fewer tasks than requested might be returned")."""
        queue = self._queue(request.parent)
        now = self.clock.now()
        view = _VIEW_FULL if request.response_view == _VIEW_FULL else 1
        binding = f"ListTasks {request.parent} {view}"
        after = self._page_tokens.read(request.page_token, binding, now) if request.page_token else None
        views: dict[str, Any] = {}

        def size_of(state: TaskState) -> int:
            task = views[state.task_id] = self._view(state, view)
            return int(task.ByteSize()) + 8  # and its field tag and length in the response

        items, more = page(
            list(queue.tasks.values()),
            request.page_size,
            after,
            lambda state: state.seq,
            max_size=LIST_TASKS_PAGE_SIZE,
            max_bytes=LIST_TASKS_PAGE_BYTES,
            size_of=size_of,
        )
        token = self._page_tokens.issue(binding, items[-1].seq, now) if more else ""
        tasks = [views.get(state.task_id) or self._view(state, view) for state in items]
        return _ListTasksResponse(tasks=tasks, next_page_token=token)

    def delete_task(self, request: Any) -> Any:
        """DeleteTask: an attempt in flight is not interrupted, but the task will not be retried."""
        state = self._task(request.name)
        self._forget(state, self.clock.now())
        return empty_pb2.Empty()

    def run_task(self, request: Any) -> Any:
        """RunTask: "Cloud Tasks will dispatch the task, even if the task is already running, the queue has
        reached its RateLimits or is PAUSED"; a task that ended is NOT_FOUND."""
        if self._loop is None:
            raise RpcError(grpc.StatusCode.FAILED_PRECONDITION, "the emulator is not running")
        state = self._task(request.name)
        state.heap_key = -1
        self._start_attempt(state.queue, state)
        return self._view(state, request.response_view)
