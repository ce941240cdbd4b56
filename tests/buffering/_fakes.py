"""An in-memory `TaskSender` for unit tests of the buffer; the integration tests use the emulator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from google.cloud import tasks_v2

from fastapi_gcp_tasks.build._naming import new_task_id, task_name
from fastapi_gcp_tasks.dispatch._sink import PreparedTask
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, TaskAlreadyExistsError

QUEUE = "projects/p/locations/l/queues/q"


class RecordingSender:
    """Records every call; `failures[name]` lists errors to raise on that task's next attempts."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.delay = delay
        self.created: list[str] = []
        self.calls: list[tuple[str, list[str]]] = []
        self.failures: dict[str, list[FastAPIGCPTasksError]] = {}
        self.batch_error: list[Exception] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def _create(self, request: tasks_v2.CreateTaskRequest) -> tasks_v2.Task:
        name = request.task.name
        with self._lock:
            pending = self.failures.get(name)
            if pending:
                raise pending.pop(0)
            if name in self.created:
                raise TaskAlreadyExistsError(name)
            self.created.append(name)
        return tasks_v2.Task(name=name)

    def send(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        self.calls.append(("create", [request.task.name]))
        return self._create(request)

    async def send_async(self, request: tasks_v2.CreateTaskRequest, *, timeout: float) -> tasks_v2.Task:
        self.calls.append(("create", [request.task.name]))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self._create(request)
        finally:
            self.in_flight -= 1

    async def send_batch_async(
        self,
        requests: Sequence[tasks_v2.CreateTaskRequest],
        *,
        timeout: float,
    ) -> list[tasks_v2.Task | FastAPIGCPTasksError]:
        self.calls.append(("batch", [request.task.name for request in requests]))
        if self.batch_error:
            raise self.batch_error.pop(0)
        await asyncio.sleep(self.delay)
        results: list[tasks_v2.Task | FastAPIGCPTasksError] = []
        for request in requests:
            try:
                results.append(self._create(request))
            except FastAPIGCPTasksError as exc:
                results.append(exc)
        return results


def prepared(sender: RecordingSender, *, queue: str = QUEUE, task_id: str | None = None) -> PreparedTask:
    """A named task as `.delay()` hands it to a sink."""
    name = task_name(queue, task_id or new_task_id())
    request = tasks_v2.CreateTaskRequest(
        parent=queue,
        task=tasks_v2.Task(
            name=name,
            http_request=tasks_v2.HttpRequest(url="http://127.0.0.1/hello", http_method=tasks_v2.HttpMethod.POST),
        ),
    )
    return PreparedTask(request=request, timeout=5.0, sender=sender)
