"""The console's backend for a production app: task history, the Cloud Tasks API, schedules and the outbox.

Each source is optional and adds its pages and buttons (`features`): without history the task list is what
Cloud Tasks still holds (pending tasks only); with it, every task and attempt the app recorded. Every call
below blocks (SQL, gRPC), so each runs in Starlette's thread pool; every service error becomes a
`ConsoleActionError` through the transport's one error policy, so a failed action is a flash message.

What is shown respects the history's redaction policy: with history configured, a task's arguments come
from history (redacted when stored), and the Cloud Tasks copy of the request (query string, headers, body,
which carry the same arguments unredacted) is not shown.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import grpc
from google.cloud import scheduler_v1, tasks_v2
from starlette.concurrency import run_in_threadpool

from fastapi_gcp_tasks.console._backend import (
    AttemptView,
    EndpointStats,
    JobView,
    LetterView,
    Overview,
    QueueView,
    TaskDetail,
    TaskView,
)
from fastapi_gcp_tasks.console._errors import ConsoleActionError, ConsoleConfigError
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError
from fastapi_gcp_tasks.history._types import (
    HistoryStats,
    Page,
    StoredLetter,
    TaskRecord,
    TaskSummary,
    ThroughputPoint,
)
from fastapi_gcp_tasks.transport._clients import SyncClientSource, sync_tasks_source
from fastapi_gcp_tasks.transport._errors import classify, translate

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

    from fastapi_gcp_tasks.schedules import Schedules
    from fastapi_gcp_tasks.schedules._plan import JobChange

__all__ = ["AppBackend"]

logger = logging.getLogger("fastapi_gcp_tasks.console")

T = TypeVar("T")

_QUEUE_PATH = re.compile(r"projects/[^/]+/locations/[^/]+/queues/[A-Za-z0-9-]{1,100}")
_LOCATION_PATH = re.compile(r"projects/[^/]+/locations/[^/]+")
_TASK_PATH = re.compile(r"(projects/[^/]+/locations/[^/]+/queues/[A-Za-z0-9-]{1,100})/tasks/[A-Za-z0-9_-]{1,500}")
_SECRET_HEADERS = re.compile(r"authorization|cookie|x-api-key|.*-token|.*secret.*|.*signature.*", re.IGNORECASE)
_BODY_EXCERPT = 2000
_CACHE_SECONDS = 10.0
_SETTLE = dt.timedelta(minutes=2)
"""How long after its end a throughput bucket may still receive attempts (the history writes in batches)."""
_LETTER_SCAN = 2000
"""How many open letters a task page looks through for the one to replay."""


class _Letters(Protocol):
    def list(
        self,
        *,
        status: Any = "open",
        endpoint: str | None = None,
        reason: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[StoredLetter]: ...
    def get(self, letter_id: int) -> StoredLetter | None: ...
    def count(self, status: Any = "open") -> int: ...
    def discard(self, letter_id: int) -> bool: ...


class _History(Protocol):
    """What the console reads of `TaskHistory`."""

    @property
    def stats(self) -> HistoryStats: ...
    @property
    def dead_letters(self) -> Any: ...
    def get(self, task_name: str) -> TaskRecord | None: ...
    def find(
        self,
        *,
        endpoint: str | None = None,
        queue: str | None = None,
        status: Any = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        search: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[TaskSummary]: ...
    def throughput(
        self, *, since: dt.datetime, bucket: dt.timedelta, endpoint: str | None = None
    ) -> list[ThroughputPoint]: ...


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _aware(value: Any) -> dt.datetime | None:
    """A proto-plus timestamp (or None / the epoch of an unset one) as an aware datetime."""
    if not isinstance(value, dt.datetime) or value.timestamp() <= 0:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _status_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return str(status.name)
    return str(code)


def _task_view(summary: TaskSummary) -> TaskView:
    return TaskView(
        name=summary.task_name,
        short_name=_short(summary.task_name),
        queue=summary.queue_name,
        endpoint=summary.endpoint,
        status=summary.status,
        created_at=summary.created_at,
        last_attempt_at=summary.last_attempt_at,
        attempts=summary.attempts,
        last_status_code=summary.last_status_code,
    )


def _cloud_task_view(task: tasks_v2.Task) -> TaskView:
    parts = _TASK_PATH.fullmatch(task.name)
    last = task.last_attempt
    return TaskView(
        name=task.name,
        short_name=_short(task.name),
        queue=_short(parts.group(1)) if parts else None,
        endpoint=urlsplit(task.http_request.url).path or None,
        status="retrying" if task.dispatch_count else "pending",
        created_at=_aware(task.create_time),
        last_attempt_at=_aware(last.dispatch_time) if last else None,
        attempts=int(task.dispatch_count),
        last_status_code=None,
    )


def _letter_view(letter: StoredLetter) -> LetterView:
    return LetterView(
        letter_id=str(letter.letter_id),
        reason=letter.reason,
        endpoint=letter.endpoint,
        task_name=letter.task_name,
        received_at=letter.received_at,
        status=letter.status,
        errors=letter.errors,
        replayed_as=letter.replayed_as,
    )


def _queue_view(queue: tasks_v2.Queue) -> QueueView:
    state = tasks_v2.Queue.State(queue.state).name
    return QueueView(
        name=queue.name,
        short_name=_short(queue.name),
        state="UNKNOWN" if state == "STATE_UNSPECIFIED" else state,
        max_dispatches_per_second=queue.rate_limits.max_dispatches_per_second or None,
        max_concurrent_dispatches=queue.rate_limits.max_concurrent_dispatches or None,
        max_attempts=queue.retry_config.max_attempts or None,
        tasks=None,
    )


def _job_view(location_path: str, change: JobChange) -> JobView:
    desired, current = change.desired, change.current
    job = current if current is not None else desired
    assert job is not None  # a change has at least one side
    state = scheduler_v1.Job.State(current.state).name if current is not None else "NOT_DEPLOYED"
    last_status = None
    if current is not None and _aware(current.last_attempt_time) is not None:
        last_status = _status_name(current.status.code)
    return JobView(
        name=f"{location_path}/jobs/{change.job_id}",
        short_name=change.job_id,
        schedule=(desired or job).schedule or None,
        time_zone=(desired or job).time_zone or None,
        state="UNKNOWN" if state == "STATE_UNSPECIFIED" else state,
        next_run=_aware(current.schedule_time) if current is not None else None,
        last_attempt_status=last_status,
        target=job.http_target.uri or None,
        planned=desired is not None,
        deployed=current is not None,
        drift=tuple(str(field) for field in change.fields),
    )


def _failed(exc: Exception, what: str) -> ConsoleActionError:
    """The flash message for a failed call: the transport's translation (`SendError: ...`), or the library error."""
    translated = translate(exc, what=what)
    if translated is exc and not isinstance(exc, FastAPIGCPTasksError):
        raise exc  # not a service error: a bug, shown as such
    return ConsoleActionError(str(translated))


class _Cached:
    """One value recomputed at most every `seconds` (queue settings and the schedule plan cost an RPC each)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._value: Any = None
        self._at = -1e18

    def get(self) -> Any:
        return self._value if time.monotonic() - self._at < self.seconds else None

    def put(self, value: T) -> T:
        self._value, self._at = value, time.monotonic()
        return value

    def clear(self) -> None:
        self._at = -1e18


class _Chart:
    """The overview's throughput buckets, re-reading only those that may still change.

    Grouping a day of attempts costs a scan of every attempt of the day (about 100,000 rows a day at one
    task a second); a bucket that ended more than `_SETTLE` ago no longer changes (the history writer is at
    most seconds behind), so it is read once and kept, and each render reads the last bucket or two.
    """

    def __init__(self, window: dt.timedelta, bucket: dt.timedelta) -> None:
        self.window = window
        self.bucket = bucket
        self._lock = threading.Lock()
        self._settled: list[ThroughputPoint] = []
        self._settled_until: dt.datetime | None = None

    def _floor(self, moment: dt.datetime) -> dt.datetime:
        size = self.bucket.total_seconds()
        return dt.datetime.fromtimestamp(moment.timestamp() // size * size, dt.UTC)

    def points(self, history: _History, now: dt.datetime) -> list[ThroughputPoint]:
        start = self._floor(now - self.window)  # whole buckets, so that the bars of two renders line up
        settled_until = self._floor(now - _SETTLE)
        with self._lock:
            if self._settled_until is None or self._settled_until < start:
                self._settled, self._settled_until = [], start
            self._settled = [point for point in self._settled if point.bucket_start >= start]
            fresh = history.throughput(since=self._settled_until, bucket=self.bucket)
            if settled_until > self._settled_until:
                self._settled += [point for point in fresh if point.bucket_start < settled_until]
                self._settled_until = settled_until
            return self._settled + [point for point in fresh if point.bucket_start >= self._settled_until]


class AppBackend:
    """The `ConsoleBackend` of a production app; `create_console` builds one from its arguments.

    Args:
        history: the app's `TaskHistory` (tasks, attempts, throughput, dead letters), or None.
        queues: the queues shown and acted on: full queue paths, or location paths
            (`projects/P/locations/L`) meaning every queue there. Actions on any other queue are refused.
        tasks_client: a Cloud Tasks client (or a factory of one); by default the process's shared client
            (the emulator's when `FASTAPI_GCP_TASKS_EMULATOR_HOST` is set).
        schedules: the app's `Schedules` registry (the plan against what Cloud Scheduler holds), or None.
        outbox: an `OutboxStore` (or anything with `stats().pending`) for the outbox backlog, or None.
        app: the app (or router) holding the task routes; needed to replay dead letters.
        title: shown in the console's header.
        window / bucket: the overview chart's time span and bar width.
    """

    def __init__(
        self,
        *,
        history: Any = None,
        queues: Sequence[str] = (),
        tasks_client: Any = None,
        schedules: Schedules | None = None,
        outbox: Any = None,
        app: FastAPI | APIRouter | None = None,
        title: str = "Tasks",
        window: dt.timedelta = dt.timedelta(hours=24),
        bucket: dt.timedelta = dt.timedelta(hours=1),
    ) -> None:
        if isinstance(queues, str) or not isinstance(queues, Iterable):
            raise ConsoleConfigError(
                f"queues must be a sequence of queue or location paths, not {queues!r}", param="queues"
            )
        queue_list = list(queues)
        for queue in queue_list:
            if not isinstance(queue, str) or not (_QUEUE_PATH.fullmatch(queue) or _LOCATION_PATH.fullmatch(queue)):
                raise ConsoleConfigError(
                    f"queues: {queue!r} is neither projects/P/locations/L/queues/Q nor projects/P/locations/L",
                    param="queues",
                )
        if history is not None and not all(hasattr(history, name) for name in ("find", "get", "throughput")):
            raise ConsoleConfigError(f"history must be a TaskHistory, not {history!r}", param="history")
        if outbox is not None and not callable(getattr(outbox, "stats", None)):
            raise ConsoleConfigError(
                f"outbox must be an OutboxStore (anything with stats().pending), not {outbox!r}", param="outbox"
            )
        if schedules is not None and not callable(getattr(schedules, "plan", None)):
            raise ConsoleConfigError(f"schedules must be a Schedules registry, not {schedules!r}", param="schedules")
        if app is not None and history is None:
            raise ConsoleConfigError("app= is for replaying dead letters, which needs history=", param="app")
        if (
            not isinstance(window, dt.timedelta)
            or not isinstance(bucket, dt.timedelta)
            or not (dt.timedelta(0) < bucket <= window)
        ):
            raise ConsoleConfigError("bucket and window must be timedeltas with 0 < bucket <= window", param="bucket")
        self.title = title
        self._history: _History | None = history
        self._queue_specs = tuple(queue_list)
        self._client: SyncClientSource[tasks_v2.CloudTasksClient] = sync_tasks_source(tasks_client)
        self._schedules = schedules
        self._outbox = outbox
        self._app = app
        self._queues_cache = _Cached(_CACHE_SECONDS)
        self._plan_cache = _Cached(_CACHE_SECONDS)
        self._token_cache = _Cached(1.0)
        self._chart = _Chart(window, bucket)
        features = set()
        if history is not None:
            features.update({"history", "dead_letters"})
            if app is not None:
                features.add("replay")
        if outbox is not None:
            features.add("outbox")
        if schedules is not None:
            features.add("schedules")
        self.features: frozenset[str] = frozenset(features)

    # reading ---------------------------------------------------------------------------------------------------

    @property
    def _letters(self) -> _Letters:
        assert self._history is not None
        letters: _Letters = self._history.dead_letters
        return letters

    def _read_queues(self) -> list[QueueView]:
        client = self._client.get()
        views: list[QueueView] = []
        for spec in self._queue_specs:
            try:
                if _QUEUE_PATH.fullmatch(spec):
                    views.append(_queue_view(client.get_queue(name=spec)))
                else:
                    views.extend(_queue_view(queue) for queue in client.list_queues(parent=spec))
            except Exception as exc:
                if classify(exc) is None:
                    raise
                logger.warning("console: cannot read %s: %s", spec, translate(exc, what="get_queue"))
                if _QUEUE_PATH.fullmatch(spec):
                    views.append(QueueView(spec, _short(spec), "UNKNOWN", None, None, None, None))
        return views

    async def queues(self) -> list[QueueView]:
        cached: list[QueueView] | None = self._queues_cache.get()
        if cached is None:
            cached = self._queues_cache.put(await run_in_threadpool(self._read_queues))
        return list(cached)

    async def _plan_views(self) -> list[JobView]:
        if self._schedules is None:
            return []
        cached: list[JobView] | None = self._plan_cache.get()
        if cached is not None:
            return cached
        schedules = self._schedules
        try:
            plan = await run_in_threadpool(schedules.plan)
        except Exception as exc:
            raise _failed(exc, "list_jobs") from exc
        return self._plan_cache.put([_job_view(plan.location_path, change) for change in plan.changes])

    async def schedules(self) -> list[JobView]:
        return list(await self._plan_views())

    def _token_parts(self) -> list[Any]:
        parts: list[Any] = []
        if self._history is not None:
            history = self._history
            now = dt.datetime.now(dt.UTC)
            newest = history.find(limit=1).items
            recent = history.throughput(since=now - dt.timedelta(minutes=5), bucket=dt.timedelta(minutes=5))
            parts += [
                history.stats.recorded,
                [(t.task_name, t.status, t.attempts) for t in newest],
                sum(p.succeeded + p.failed for p in recent),
                self._letters.count("open"),
            ]
        if self._outbox is not None:
            parts.append(self._outbox.stats().pending)
        return parts

    async def change_token(self) -> str:
        cached: str | None = self._token_cache.get()
        if cached is not None:
            return cached
        parts = await run_in_threadpool(self._token_parts)
        parts.append([(q.name, q.state) for q in await self.queues()])
        if self._schedules is not None:
            parts.append([(j.short_name, j.state, j.next_run) for j in await self._plan_views()])
        digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()
        return self._token_cache.put(digest)

    def _overview_rows(self) -> tuple[list[ThroughputPoint], int | None, int | None]:
        chart: list[ThroughputPoint] = []
        letters = None
        if self._history is not None:
            chart = self._chart.points(self._history, dt.datetime.now(dt.UTC))
            letters = self._letters.count("open")
        backlog = int(self._outbox.stats().pending) if self._outbox is not None else None
        return chart, letters, backlog

    async def overview(self) -> Overview:
        chart, letters, backlog = await run_in_threadpool(self._overview_rows)
        totals: dict[str, list[int]] = {}
        for point in chart:
            counts = totals.setdefault(point.endpoint, [0, 0])
            counts[0] += point.succeeded
            counts[1] += point.failed
        endpoints = [
            EndpointStats(name, ok, failed, failed / (ok + failed) if ok + failed else 0.0)
            for name, (ok, failed) in sorted(totals.items())
        ]
        jobs = sorted(
            (job for job in await self._plan_views() if job.next_run is not None),
            key=lambda job: job.next_run or dt.datetime.max.replace(tzinfo=dt.UTC),
        )
        return Overview(
            queues=await self.queues(),
            endpoints=endpoints,
            chart=chart,
            dead_letters=letters,
            outbox_backlog=backlog,
            next_runs=jobs[:10],
        )

    def _list_cloud_tasks(self, queue: str | None, cursor: str | None, limit: int) -> Page[TaskView]:
        """Without history: the tasks Cloud Tasks holds, queue after queue; the cursor is `index:page_token`."""
        names = [q.name for q in self._queues_cache.get() or []] or [
            spec for spec in self._queue_specs if _QUEUE_PATH.fullmatch(spec)
        ]
        if queue is not None:
            names = [name for name in names if _short(name) == queue or name == queue]
        index, token = 0, ""
        if cursor:
            head, _, token = cursor.partition(":")
            index = int(head) if head.isdigit() else 0
        if index >= len(names):
            return Page(items=(), next_cursor=None)
        client = self._client.get()
        request = tasks_v2.ListTasksRequest(parent=names[index], page_size=limit, page_token=token)
        try:
            pager = client.list_tasks(request=request)
        except Exception as exc:
            raise _failed(exc, "list_tasks") from exc
        items = [_cloud_task_view(task) for task in pager.tasks]
        if pager.next_page_token:
            return Page(items=items, next_cursor=f"{index}:{pager.next_page_token}")
        return Page(items=items, next_cursor=f"{index + 1}:" if index + 1 < len(names) else None)

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
        history = self._history
        if history is None:
            if status not in (None, "pending", "retrying") or endpoint is not None or search is not None:
                return Page(items=(), next_cursor=None)  # Cloud Tasks can only list what is waiting
            await self.queues()
            return await run_in_threadpool(self._list_cloud_tasks, queue, cursor, limit)
        try:
            page = await run_in_threadpool(
                lambda: history.find(
                    endpoint=endpoint, queue=queue, status=status, search=search, limit=limit, cursor=cursor
                )
            )
        except ValueError as exc:  # a cursor that is not one of ours
            raise ConsoleActionError(f"bad page cursor: {exc}") from exc
        return Page(items=[_task_view(summary) for summary in page.items], next_cursor=page.next_cursor)

    def _cloud_task(self, name: str) -> tasks_v2.Task | None:
        """The task as Cloud Tasks holds it, None when it does not (any more) or is not on a configured queue."""
        parts = _TASK_PATH.fullmatch(name)
        if parts is None or not self._allowed_queue(parts.group(1)):
            return None
        view = tasks_v2.Task.View.BASIC if self._history is not None else tasks_v2.Task.View.FULL
        try:
            return self._client.get().get_task(request=tasks_v2.GetTaskRequest(name=name, response_view=view))
        except Exception as exc:
            code = classify(exc)
            if code is None:
                raise
            if code is not grpc.StatusCode.NOT_FOUND:
                logger.warning("console: cannot read task %s: %s", name, translate(exc, what="get_task"))
            return None

    def _letter_for(self, task_name: str) -> StoredLetter | None:
        """The open dead letter of this task (matched on the short task id), among the newest `_LETTER_SCAN`."""
        short = _short(task_name)
        cursor: str | None = None
        seen = 0
        while seen < _LETTER_SCAN:
            page = self._letters.list(status="open", limit=200, cursor=cursor)
            for letter in page.items:
                if letter.task_name is not None and _short(letter.task_name) == short:
                    return letter
            seen += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
        return None

    def _task_detail(self, name: str) -> TaskDetail | None:
        record = self._history.get(name) if self._history is not None else None
        cloud = self._cloud_task(record.summary.task_name if record is not None else name)
        if record is None and cloud is None:
            return None
        actions: set[str] = set()
        if cloud is not None:
            actions.update({"run", "delete"})
        method = url = body = None
        headers: Mapping[str, str] = {}
        if cloud is not None:
            request = cloud.http_request
            method = tasks_v2.HttpMethod(request.http_method).name
            url = request.url
            if self._history is None:
                headers = {k: "[redacted]" if _SECRET_HEADERS.fullmatch(k) else v for k, v in request.headers.items()}
                body = request.body[:_BODY_EXCERPT].decode("utf-8", "replace") if request.body else None
            else:  # the query string carries arguments that history may have redacted
                url = urlunsplit(urlsplit(url)._replace(query="", fragment=""))
        if record is None:
            assert cloud is not None
            return TaskDetail(_cloud_task_view(cloud), method, url, None, headers, body, (), frozenset(actions))
        summary = record.summary
        replayable = "replay" in self.features and summary.status in ("failed", "dead_letter")
        if replayable and self._letter_for(summary.task_name) is not None:
            actions.add("replay")
        attempts = [
            AttemptView(
                started_at=attempt.started_at,
                duration_ms=attempt.duration * 1000.0,
                status_code=attempt.status_code,
                outcome=attempt.outcome,
                error=": ".join(part for part in (attempt.error_type, attempt.error_message) if part) or None,
                trace_id=attempt.trace_id,
                body_excerpt=None,
            )
            for attempt in record.attempts
        ]
        return TaskDetail(
            view=_task_view(summary),
            method=method or record.method,
            url=url,
            arguments=record.arguments,
            headers=headers,
            body_excerpt=body,
            attempts=attempts,
            actions=frozenset(actions),
        )

    async def task(self, name: str) -> TaskDetail | None:
        return await run_in_threadpool(self._task_detail, name)

    async def dead_letters(self, *, cursor: str | None = None, limit: int = 50) -> Page[LetterView]:
        if self._history is None:
            return Page(items=(), next_cursor=None)
        letters = self._letters
        try:
            page = await run_in_threadpool(lambda: letters.list(status=None, limit=limit, cursor=cursor))
        except ValueError as exc:
            raise ConsoleActionError(f"bad page cursor: {exc}") from exc
        return Page(items=[_letter_view(letter) for letter in page.items], next_cursor=page.next_cursor)

    # acting ----------------------------------------------------------------------------------------------------

    def _allowed_queue(self, queue: str) -> bool:
        if queue in self._queue_specs:
            return True
        location = queue.split("/queues/")[0]
        return _QUEUE_PATH.fullmatch(queue) is not None and location in self._queue_specs

    async def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return await run_in_threadpool(call)
        except ConsoleActionError:
            raise
        except Exception as exc:
            raise _failed(exc, what) from exc
        finally:
            self._queues_cache.clear()
            self._plan_cache.clear()
            self._token_cache.clear()

    async def queue_action(self, queue: str, action: Literal["pause", "resume", "purge"]) -> str:
        if not self._allowed_queue(queue):
            raise ConsoleActionError(f"{queue} is not one of the console's queues")
        client = self._client.get()
        method = {"pause": client.pause_queue, "resume": client.resume_queue, "purge": client.purge_queue}[action]
        await self._call(f"{action}_queue", lambda: method(name=queue))
        return f"Queue {_short(queue)}: {action} done"

    async def task_action(self, name: str, action: Literal["run", "delete", "replay"]) -> str:
        if action == "replay":
            if self._history is None or "replay" not in self.features:
                raise ConsoleActionError("replay needs history= and app=")
            letter = await run_in_threadpool(self._letter_for, name)
            if letter is None:
                raise ConsoleActionError(f"task {_short(name)} has no open dead letter to replay")
            return await self.letter_action(str(letter.letter_id), "replay")
        parts = _TASK_PATH.fullmatch(name)
        if parts is None or not self._allowed_queue(parts.group(1)):
            raise ConsoleActionError(f"{name} is not a task of the console's queues")
        client = self._client.get()
        if action == "run":
            await self._call("run_task", lambda: client.run_task(name=name))
            return f"Task {_short(name)} dispatched now"
        await self._call("delete_task", lambda: client.delete_task(name=name))
        return f"Task {_short(name)} deleted"

    async def letter_action(self, letter_id: str, action: Literal["replay", "discard"]) -> str:
        if self._history is None:
            raise ConsoleActionError("dead letters need history=")
        try:
            number = int(letter_id)
        except ValueError:
            raise ConsoleActionError(f"no dead letter {letter_id!r}") from None
        letters = self._letters
        if action == "discard":
            if not await self._call("discard", lambda: letters.discard(number)):
                raise ConsoleActionError(f"dead letter {number} is not open")
            return f"Dead letter {number} discarded"
        if self._app is None:
            raise ConsoleActionError("replay needs app= (the app holding the task routes)")
        from fastapi_gcp_tasks.history._replay import replay_letter_async

        app = self._app
        try:
            task = await replay_letter_async(app, letters, number)  # type: ignore[arg-type]
        except FastAPIGCPTasksError as exc:
            raise ConsoleActionError(f"dead letter {number} not replayed: {exc}") from exc
        except Exception as exc:
            raise _failed(exc, "replay") from exc
        finally:
            self._token_cache.clear()
        return f"Dead letter {number} replayed as task {_short(task.name)}"

    async def job_action(self, name: str, action: Literal["pause", "resume", "run"]) -> str:
        schedules = self._schedules
        if schedules is None:
            raise ConsoleActionError("schedules need schedules=")
        declared = {entry.job_id: entry.name for entry in schedules}
        if name not in declared:
            raise ConsoleActionError(f"job {name} is not declared by this app's schedules")
        method = {"pause": schedules.pause, "resume": schedules.resume, "run": schedules.run}[action]
        await self._call(f"{action}_job", lambda: method(declared[name]))
        return f"Job {name}: {'run started' if action == 'run' else action + ' done'}"

    async def advance_clock(self, seconds: float) -> str:
        raise ConsoleActionError("a production app has no manual clock")
