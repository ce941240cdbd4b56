"""Eager mode: `.delay()` runs the task's endpoint at once, in-process, through the app (no emulator).

Every Cloud Tasks builder of the process sends through an eager client while the block is active. The
eager client turns each CreateTaskRequest into the HTTP request Cloud Tasks would make (the task's URL,
method, headers and body, plus `User-Agent: Google-Cloud-Tasks` and the `X-CloudTasks-*` headers of a first
attempt) and hands it to the app: FastAPI validates it and runs the endpoint as on a real delivery. A sync
`.delay()` calls the app through httpx's `ASGITransport` on an event loop of its own (in a thread of its own,
as Starlette's `TestClient` does), an async one on the running loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import datetime as dt
import random
import threading
from collections.abc import Iterator
from typing import Any

import httpx
from google.cloud import tasks_v2

from fastapi_gcp_tasks.dispatch._sink import PreparedTask, use_sink
from fastapi_gcp_tasks.testing._assertions import RawTask
from fastapi_gcp_tasks.transport._clients import use_tasks_client

__all__ = ["EagerDelivery", "EagerTaskError", "EagerTasks", "eager_tasks"]


class EagerTaskError(AssertionError):
    """An eager task's endpoint answered with a status other than 2xx."""

    def __init__(self, delivery: EagerDelivery) -> None:
        task = delivery.task
        super().__init__(
            f"task {task.name} ({task.method} {task.url}) answered {delivery.status}: {delivery.response_text[:2000]}"
        )
        self.delivery = delivery


@dataclasses.dataclass(slots=True)
class EagerDelivery:
    """One task run eagerly: its request and what the app answered (or raised)."""

    task: RawTask
    status: int | None
    """The HTTP status, or None when the endpoint raised (see `error`)."""
    response_text: str = ""
    error: BaseException | None = None
    reported: bool = False
    """Whether its failure was already raised to the caller of `.delay()`."""

    @property
    def ok(self) -> bool:
        """Whether the app acknowledged the task (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300


def _short(path: str) -> str:
    return path.rpartition("/")[2]


class EagerTasks:
    """The tasks run by one `eager_tasks()` block, in the order they ran (`deliveries`)."""

    def __init__(self, app: Any, *, raise_errors: bool) -> None:
        self.app = app
        self.raise_errors = raise_errors
        self._deliveries: list[EagerDelivery] = []
        self._by_name: dict[str, EagerDelivery] = {}
        self._lock = threading.Lock()

    @property
    def deliveries(self) -> list[EagerDelivery]:
        """Every task run so far, oldest first."""
        with self._lock:
            return list(self._deliveries)

    @property
    def failures(self) -> list[EagerDelivery]:
        """The tasks whose endpoint raised or answered other than 2xx."""
        return [delivery for delivery in self.deliveries if not delivery.ok]

    # turning a CreateTaskRequest into a delivery -----------------------------------------------------------------

    def _prepare(self, request: tasks_v2.CreateTaskRequest) -> tuple[tasks_v2.Task, RawTask]:
        task = tasks_v2.Task(request.task)
        parent = request.parent
        if not task.name:
            task.name = f"{parent}/tasks/{random.getrandbits(63)}"
        now = dt.datetime.now(dt.UTC)
        if "create_time" not in task:
            task.create_time = now
        if "schedule_time" not in task:
            task.schedule_time = now
        http = task.http_request
        headers = {key: value for key, value in http.headers.items() if not key.lower().startswith("x-cloudtasks-")}
        headers["User-Agent"] = "Google-Cloud-Tasks"
        headers["X-CloudTasks-QueueName"] = _short(parent)
        headers["X-CloudTasks-TaskName"] = _short(task.name)
        headers["X-CloudTasks-TaskRetryCount"] = "0"
        headers["X-CloudTasks-TaskExecutionCount"] = "0"
        headers["X-CloudTasks-TaskETA"] = f"{task.schedule_time.timestamp():.6f}"
        method = tasks_v2.HttpMethod(http.http_method).name if http.http_method else "POST"
        return task, RawTask(task.name, method, http.url, headers, bytes(http.body))

    def _record(self, raw: RawTask, response: httpx.Response | None, error: BaseException | None) -> EagerDelivery:
        delivery = EagerDelivery(
            task=raw,
            status=None if response is None else response.status_code,
            response_text="" if response is None else response.text,
            error=error,
        )
        with self._lock:
            self._deliveries.append(delivery)
            self._by_name[raw.name] = delivery
        return delivery

    def _raise_now(self, delivery: EagerDelivery) -> None:
        if not self.raise_errors or delivery.ok:
            return
        delivery.reported = True
        if delivery.error is not None:
            raise delivery.error
        raise EagerTaskError(delivery)

    def run(self, request: tasks_v2.CreateTaskRequest) -> tuple[tasks_v2.Task, EagerDelivery]:
        """Deliver one task into the app now, from synchronous code.

        The app runs on a new event loop in a thread of its own, so that this works from any thread, a
        thread whose loop is running (a sync `.delay()` inside an async endpoint) included.
        """
        outcome: list[tuple[tasks_v2.Task, EagerDelivery]] = []
        failure: list[BaseException] = []

        def deliver() -> None:
            try:
                outcome.append(context.run(asyncio.run, self.run_async(request)))
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                failure.append(exc)

        context = contextvars.copy_context()  # a `.delay()` in the endpoint is eager and raises there too
        thread = threading.Thread(target=deliver, name="fastapi-gcp-tasks-eager")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    async def run_async(self, request: tasks_v2.CreateTaskRequest) -> tuple[tasks_v2.Task, EagerDelivery]:
        """Deliver one task into the app now, on the running event loop."""
        task, raw = self._prepare(request)
        transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=self.raise_errors)
        async with httpx.AsyncClient(transport=transport, follow_redirects=False) as client:
            try:
                response = await client.request(raw.method, raw.url, headers=dict(raw.headers), content=raw.body)
            except Exception as exc:  # noqa: BLE001 - the endpoint's own exception, recorded and raised by the caller
                return task, self._record(raw, None, exc)
        return task, self._record(raw, response, None)

    def unreported_failure(self) -> EagerDelivery | None:
        """The first failure not yet raised to a `.delay()` caller (a buffered task's, for example)."""
        for delivery in self.failures:
            if not delivery.reported:
                return delivery
        return None


class _Operation:
    """What `batch_create_tasks` returns: done at once, every task created (its run's failure is kept apart)."""

    metadata = None

    def __init__(self, tasks: list[tasks_v2.Task]) -> None:
        self._response = tasks_v2.BatchCreateTasksResponse(tasks=tasks)

    def result(self, timeout: float | None = None) -> tasks_v2.BatchCreateTasksResponse:
        return self._response


class _AsyncOperation(_Operation):
    async def result(self, timeout: float | None = None) -> tasks_v2.BatchCreateTasksResponse:  # type: ignore[override]
        return self._response


def _each(batch: tasks_v2.BatchCreateTasksRequest) -> list[tasks_v2.CreateTaskRequest]:
    return [tasks_v2.CreateTaskRequest(parent=item.parent or batch.parent, task=item.task) for item in batch.requests]


class _EagerClient:
    """The sync Cloud Tasks client of eager mode: queues always exist, tasks run at creation."""

    def __init__(self, runner: EagerTasks) -> None:
        self._runner = runner

    def create_task(self, request: tasks_v2.CreateTaskRequest, **_: Any) -> tasks_v2.Task:
        return self._runner.run(request)[0]

    def batch_create_tasks(self, request: tasks_v2.BatchCreateTasksRequest, **_: Any) -> _Operation:
        return _Operation([self._runner.run(item)[0] for item in _each(request)])

    def create_queue(self, request: tasks_v2.CreateQueueRequest, **_: Any) -> tasks_v2.Queue:
        return request.queue

    def get_queue(self, name: str, **_: Any) -> tasks_v2.Queue:
        return tasks_v2.Queue(name=name)


class _AsyncEagerClient:
    """The async Cloud Tasks client of eager mode."""

    def __init__(self, runner: EagerTasks) -> None:
        self._runner = runner

    async def create_task(self, request: tasks_v2.CreateTaskRequest, **_: Any) -> tasks_v2.Task:
        return (await self._runner.run_async(request))[0]

    async def batch_create_tasks(self, request: tasks_v2.BatchCreateTasksRequest, **_: Any) -> _AsyncOperation:
        return _AsyncOperation([(await self._runner.run_async(item))[0] for item in _each(request)])

    async def create_queue(self, request: tasks_v2.CreateQueueRequest, **_: Any) -> tasks_v2.Queue:
        return request.queue

    async def get_queue(self, name: str, **_: Any) -> tasks_v2.Queue:
        return tasks_v2.Queue(name=name)


class _EagerSink:
    """The sink of a direct `.delay()` in eager mode: runs the task through the eager client, then raises its failure.

    Failures are raised here rather than by the client, whose other caller, a buffer's flush after the
    response, must see a task created (the failure is raised when the block ends instead).
    """

    def __init__(self, runner: EagerTasks) -> None:
        self._runner = runner

    def _outcome(self, task: tasks_v2.Task) -> tasks_v2.Task:
        delivery = self._runner._by_name.get(task.name)
        if delivery is not None:
            self._runner._raise_now(delivery)
        return task

    def submit(self, task: PreparedTask) -> tasks_v2.Task:
        return self._outcome(task.sender.send(task.request, timeout=task.timeout))

    async def submit_async(self, task: PreparedTask) -> tasks_v2.Task:
        return self._outcome(await task.sender.send_async(task.request, timeout=task.timeout))


@contextlib.contextmanager
def eager_tasks(app: Any, *, raise_errors: bool = True) -> Iterator[EagerTasks]:
    """Within the block, `.delay()` runs the task at once through `app`, in-process, instead of creating it.

    Every Cloud Tasks builder of the process (default or given clients, sync or async, immediate or
    buffered) delivers into `app`; outbox builders (`sink=`) still write their rows. With `raise_errors`
    (the default), a `.delay()` made in the block's context (the test's code, and the endpoints eager mode
    runs) raises what the endpoint raised, or `EagerTaskError` for a status other than 2xx; a failure
    that could not be raised there (a buffered task, run after its request; a task delayed from a server
    thread) is raised when the block ends. With `raise_errors=False`,
    failures are only recorded (`EagerTasks.failures`). Tasks run in the order they are created, at once:
    `countdown` and `schedule_time` are not waited for, and there are no retries.
    """
    runner = EagerTasks(app, raise_errors=raise_errors)
    with use_tasks_client(_EagerClient(runner), _AsyncEagerClient(runner)), use_sink(_EagerSink(runner)):
        yield runner
    failed = runner.unreported_failure()
    if failed is not None and raise_errors:
        runner._raise_now(failed)
