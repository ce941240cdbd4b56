"""An in-memory `ConsoleBackend` for the console's tests: it records every action it performs."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Literal

from fastapi_gcp_tasks.console import (
    AttemptView,
    ConsoleActionError,
    EndpointStats,
    JobView,
    LetterView,
    Overview,
    QueueView,
    TaskDetail,
    TaskView,
)
from fastapi_gcp_tasks.history._types import Page, ThroughputPoint

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
QUEUE = "projects/p/locations/l/queues/default"
HOSTILE = "<script>alert(1)</script>"


def _task(index: int, **changes: object) -> TaskView:
    view = TaskView(
        name=f"{QUEUE}/tasks/t{index:05d}",
        short_name=f"t{index:05d}",
        queue="default",
        endpoint="/tasks/send/{user_id}",
        status="succeeded" if index % 3 else "failed",
        created_at=NOW - dt.timedelta(seconds=index),
        last_attempt_at=NOW - dt.timedelta(seconds=index) + dt.timedelta(milliseconds=5),
        attempts=1 + index % 3,
        last_status_code=200 if index % 3 else 500,
    )
    return replace(view, **changes)  # type: ignore[arg-type]


class FakeBackend:
    """Everything a page shows, in lists the test may change; `actions` records (kind, target, verb)."""

    title = "Fake tasks"

    def __init__(self, *, tasks: int = 120, features: frozenset[str] | None = None) -> None:
        self.features = (
            features if features is not None else frozenset({"history", "dead_letters", "schedules", "replay", "clock"})
        )
        self.actions: list[tuple[str, str, str]] = []
        self.version = 0
        self.queue_views = [
            QueueView(QUEUE, "default", "RUNNING", 500.0, 1000, 100, 12),
            QueueView("projects/p/locations/l/queues/slow", "slow", "PAUSED", 1.0, 1, 5, 0),
        ]
        self.task_views = [_task(i) for i in range(tasks)]
        hostile = _task(99999, endpoint="/tasks/x", short_name=HOSTILE)
        self.task_views.insert(0, hostile)
        self.details = {
            hostile.name: TaskDetail(
                view=hostile,
                method="POST",
                url="https://app.example/tasks/x?q=" + HOSTILE,
                arguments={"comment": HOSTILE, "nested": {"x": "\"'><img src=x onerror=alert(1)>"}},
                headers={"X-Evil": HOSTILE},
                body_excerpt=HOSTILE,
                attempts=[
                    AttemptView(NOW, 12.5, 500, "failed", "ValueError: " + HOSTILE, "trace-abc", HOSTILE),
                    AttemptView(NOW, 3.0, 200, "succeeded", None, None, None),
                ],
                actions=frozenset({"run", "delete", "replay"}),
            )
        }
        self.letters = [
            LetterView("1", "poison", "/tasks/x", f"{QUEUE}/tasks/dead1", NOW, "open", [{"loc": ["body"]}], None),
            LetterView("2", "gave_up", "/tasks/y", None, NOW, "replayed", [], f"{QUEUE}/tasks/new1"),
        ]
        self.jobs = [
            JobView(
                "projects/p/locations/l/jobs/app-nightly",
                "app-nightly",
                "0 3 * * *",
                "UTC",
                "ENABLED",
                NOW,
                "OK",
                "https://app.example/jobs/nightly",
                True,
                True,
                ("schedule: 0 3 * * * -> 0 4 * * *",),
            )
        ]
        self.fail_next: str | None = None

    async def change_token(self) -> str:
        return str(self.version)

    async def overview(self) -> Overview:
        chart = [
            ThroughputPoint(NOW - dt.timedelta(hours=h), endpoint, 10 + h, h % 3)
            for h in range(24)
            for endpoint in ("/tasks/send/{user_id}", "/tasks/x")
        ]
        return Overview(
            queues=self.queue_views,
            endpoints=[
                EndpointStats("/tasks/send/{user_id}", 300, 24, 24 / 324),
                EndpointStats("/tasks/x", 3, 1, 0.25),
            ],
            chart=chart,
            dead_letters=1,
            outbox_backlog=7,
            next_runs=self.jobs,
        )

    async def queues(self) -> list[QueueView]:
        return list(self.queue_views)

    def _act(self, kind: str, target: str, verb: str) -> str:
        if self.fail_next is not None:
            message, self.fail_next = self.fail_next, None
            raise ConsoleActionError(message)
        self.actions.append((kind, target, verb))
        self.version += 1
        return f"{verb} {target}: done"

    async def queue_action(self, queue: str, action: Literal["pause", "resume", "purge"]) -> str:
        return self._act("queue", queue, action)

    async def tasks(
        self,
        *,
        queue: str | None = None,
        endpoint: str | None = None,
        status: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page[TaskView]:
        found = [
            view
            for view in self.task_views
            if (queue is None or view.queue == queue)
            and (endpoint is None or view.endpoint == endpoint)
            and (status is None or view.status == status)
            and (search is None or search in view.name)
        ]
        start = int(cursor) if cursor else 0
        items = found[start : start + limit]
        more = start + limit < len(found)
        return Page(items=items, next_cursor=str(start + limit) if more else None)

    async def task(self, name: str) -> TaskDetail | None:
        if name in self.details:
            return self.details[name]
        for view in self.task_views:
            if view.name == name:
                return TaskDetail(view, None, None, None, {}, None, [], frozenset())
        return None

    async def task_action(self, name: str, action: Literal["run", "delete", "replay"]) -> str:
        return self._act("task", name, action)

    async def dead_letters(self, *, cursor: str | None = None, limit: int = 50) -> Page[LetterView]:
        return Page(items=self.letters, next_cursor=None)

    async def letter_action(self, letter_id: str, action: Literal["replay", "discard"]) -> str:
        return self._act("letter", letter_id, action)

    async def schedules(self) -> list[JobView]:
        return list(self.jobs)

    async def job_action(self, name: str, action: Literal["pause", "resume", "run"]) -> str:
        return self._act("job", name, action)

    async def advance_clock(self, seconds: float) -> str:
        return self._act("clock", str(seconds), "advance")
