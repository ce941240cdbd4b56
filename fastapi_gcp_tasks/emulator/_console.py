"""The console's backend for the emulator: its live in-memory queues, tasks, attempts and jobs.

The emulator keeps a task only until it succeeds, gives up or is deleted (as Cloud Tasks does), but its
recorder keeps every attempt (`keep_deliveries`). So the task list joins three sources: the tasks still stored
(pending, running, retrying) with their state, the finished ones rebuilt from their recorded attempts, and the
names deleted before any attempt, from the tombstones that keep them taken (status `deleted`). Cloud Scheduler
runs appear in the same list, named `job:<job id>@<schedule time>`. Finished tasks have no creation time, and
a `max_retries` give-up (a 200 sent without running the handler) counts as a success: the records keep
neither.

Everything the services hold is loop-bound: reads and actions run on the emulator's event loop, directly
when the console is served on that loop (the emulator's HTTP port), through `run_coroutine_threadsafe`
otherwise (a console served by another server, as the tests do).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

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
from fastapi_gcp_tasks.console._errors import ConsoleActionError
from fastapi_gcp_tasks.emulator._clock import ManualClock
from fastapi_gcp_tasks.emulator._rpc import METHODS, RpcError
from fastapi_gcp_tasks.emulator._tasks_validation import PAUSED, RUNNING
from fastapi_gcp_tasks.emulator._types import DeliveryRecord
from fastapi_gcp_tasks.history._types import Page, ThroughputPoint

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from fastapi_gcp_tasks.emulator._server import EmulatorServer
    from fastapi_gcp_tasks.emulator._tasks_dispatch import TaskState

__all__ = ["EmulatorBackend", "EmulatorConsole"]

T = TypeVar("T")

_EXCERPT = 2000
"""Characters of a request body shown on a task page."""
_CHART_WINDOW = dt.timedelta(hours=1)
_CHART_BUCKET = dt.timedelta(minutes=1)
_NEXT_RUNS = 5
_QUEUE_STATES = {RUNNING: "RUNNING", PAUSED: "PAUSED", 3: "DISABLED"}
_JOB_STATES = {0: "UNKNOWN", 1: "ENABLED", 2: "PAUSED", 3: "DISABLED", 4: "UPDATE_FAILED"}
"""`google.cloud.scheduler.v1.Job.State` by number."""


@dataclass(frozen=True, slots=True)
class _Entry:
    """A row of the task list: what filters and sorts it, and what its page needs.

    The `TaskView` is built only for the rows of the page shown (`view`): listing 10,000 stored tasks then
    costs a few microseconds each, on the emulator's loop.
    """

    sort_key: float
    """Seconds since the epoch: creation, else the first attempt, else the deletion."""
    name: str
    queue: str | None
    endpoint: str | None
    status: str
    live: TaskState | None
    records: Sequence[DeliveryRecord]
    made: TaskView | None = None

    @property
    def view(self) -> TaskView:
        """The row as the console shows it."""
        return self.made if self.made is not None else _live_view(self)


class EmulatorBackend:
    """`ConsoleBackend` over a running `EmulatorServer`: what it holds now, and actions on it.

    No task history and no dead-letter store: a finished task is known from its recorded attempts only, for
    as long as the recorder keeps them (`keep_deliveries`). The `clock` feature is on with a `ManualClock`.
    """

    def __init__(self, server: EmulatorServer, *, title: str = "Emulator") -> None:
        """Show `server` (started or not; reads wait for it to run)."""
        self.server = server
        self.title = title
        features = set()
        if server.scheduler is not None:
            features.add("schedules")
        if isinstance(server.clock, ManualClock):
            features.add("clock")
        self.features: frozenset[str] = frozenset(features)

    # running on the emulator's loop ----------------------------------------------------------------------------

    async def _on_loop(self, function: Callable[[], T]) -> T:
        """`function()` on the emulator's loop: directly when already there, else through that loop."""
        loop = self.server.tasks._loop
        if loop is None or loop is asyncio.get_running_loop():
            return function()

        async def call() -> T:
            return function()

        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))

    async def _act(self, rpc: str, name: str, done: str) -> str:
        """Call the RPC `rpc` on `name`, as a client would; a refusal becomes a `ConsoleActionError` with its message.

        Through the services' method table, the one that gRPC and REST dispatch to, so an action checks and
        does exactly what the same call from a client does.
        """
        method = next((m for m in self.server.methods if m.name == rpc), None)
        if method is None:
            raise ConsoleActionError(f"this emulator does not serve {rpc}")

        def call() -> str:
            try:
                method.call(method.request_pb(name=name))
            except RpcError as exc:
                raise ConsoleActionError(exc.message) from None
            return done

        return await self._on_loop(call)

    # live updates ----------------------------------------------------------------------------------------------

    async def change_token(self) -> str:
        """A fingerprint of everything the pages show; cheap (no walk over tasks or attempts)."""
        return await self._on_loop(self._fingerprint)

    def _fingerprint(self) -> str:
        tasks = self.server.tasks
        parts: list[object] = [len(tasks._tombstones)]
        for name, queue in tasks._queues.items():
            parts.append((name, queue.pb.state, len(queue.tasks), len(queue.heap), queue.inflight))
        parts.append(_last_record(self.server.recorder._records))
        scheduler = self.server.scheduler
        if scheduler is not None:
            for name, stored in scheduler._jobs.items():
                parts.append((name, stored.pb.state, stored.next_run, stored.busy is not None))
            parts.append((len(scheduler._waiting), len(scheduler._inflight), scheduler._attempts_made))
        if isinstance(self.server.clock, ManualClock):
            parts.append(self.server.clock.now())
        return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()

    # overview and queues ---------------------------------------------------------------------------------------

    async def overview(self) -> Overview:
        """Queues, per-endpoint attempts of the last hour (on the emulator's clock) and the next job runs."""
        return await self._on_loop(self._overview)

    def _overview(self) -> Overview:
        now = self.server.clock.now()
        since = now - _CHART_WINDOW
        buckets: dict[tuple[dt.datetime, str], list[int]] = collections.defaultdict(lambda: [0, 0])
        totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for record in self.server.recorder.records:
            endpoint = _path(record.url)
            counts = totals[endpoint]
            counts[0 if record.ok and not record.gave_up else 1] += 1
            if record.time >= since:
                start = since + _CHART_BUCKET * ((record.time - since) // _CHART_BUCKET)
                buckets[start, endpoint][0 if record.ok and not record.gave_up else 1] += 1
        chart = [
            ThroughputPoint(bucket_start=start, endpoint=endpoint, succeeded=ok, failed=failed)
            for (start, endpoint), (ok, failed) in sorted(buckets.items())
        ]
        endpoints = [
            EndpointStats(endpoint=name, succeeded=ok, failed=failed, failure_rate=failed / (ok + failed))
            for name, (ok, failed) in sorted(totals.items())
        ]
        jobs = [job for job in self._schedules() if job.next_run is not None]
        jobs.sort(key=lambda job: (job.next_run or now, job.name))
        return Overview(
            queues=self._queues(),
            endpoints=endpoints,
            chart=chart,
            dead_letters=None,
            outbox_backlog=None,
            next_runs=jobs[:_NEXT_RUNS],
        )

    async def queues(self) -> list[QueueView]:
        """Every queue, sorted by name, with its settings and the tasks it holds."""
        return await self._on_loop(self._queues)

    def _queues(self) -> list[QueueView]:
        views = []
        for name in sorted(self.server.tasks._queues):
            queue = self.server.tasks._queues[name]
            pb = queue.pb
            views.append(
                QueueView(
                    name=name,
                    short_name=queue.queue_id,
                    state=_QUEUE_STATES.get(pb.state, "UNKNOWN"),
                    max_dispatches_per_second=pb.rate_limits.max_dispatches_per_second,
                    max_concurrent_dispatches=pb.rate_limits.max_concurrent_dispatches,
                    max_attempts=pb.retry_config.max_attempts,
                    tasks=len(queue.tasks),
                )
            )
        return views

    async def queue_action(self, queue: str, action: Literal["pause", "resume", "purge"]) -> str:
        """Pause, resume or purge `queue` (its full name or short id)."""
        name = await self._on_loop(lambda: self._queue_name(queue))
        done = {"pause": "paused", "resume": "resumed", "purge": "purged"}
        if action in done:
            return await self._act(f"{action.title()}Queue", name, f"Queue {_short(name)} {done[action]}.")
        raise ConsoleActionError(f"unknown queue action {action!r}")

    def _queue_name(self, queue: str) -> str:
        queues = self.server.tasks._queues
        if queue in queues:
            return queue
        matches = [name for name, state in queues.items() if state.queue_id == queue]
        if len(matches) != 1:
            raise ConsoleActionError(f"no queue {queue!r}" if not matches else f"queue id {queue!r} is ambiguous")
        return matches[0]

    # tasks -----------------------------------------------------------------------------------------------------

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
        """Stored tasks, finished tasks and job runs, newest first; `cursor` is an offset into that order."""
        try:
            start = max(int(cursor or 0), 0)
        except ValueError:
            start = 0
        end = start + max(limit, 1)

        def page() -> Page[TaskView]:
            rows = self._entries()
            if queue:
                rows = [e for e in rows if e.queue == queue or e.name.startswith(queue + "/tasks/")]
            if endpoint:
                rows = [e for e in rows if e.endpoint == endpoint]
            if status:
                rows = [e for e in rows if e.status == status]
            if search:
                needle = search.lower()
                rows = [e for e in rows if needle in e.name.lower() or needle in (e.endpoint or "").lower()]
            items = [e.view for e in rows[start:end]]
            return Page(items=items, next_cursor=str(end) if end < len(rows) else None)

        return await self._on_loop(page)

    async def task(self, name: str) -> TaskDetail | None:
        """One task or job run (full name or short id) with its request and recorded attempts."""
        return await self._on_loop(lambda: self._task(name))

    def _task(self, name: str) -> TaskDetail | None:
        entry = self._entry(name)
        if entry is None:
            return None
        live = entry.live
        if live is not None:
            http = live.pb.http_request
            method = METHODS.get(http.http_method, "POST")
            url, headers, body = http.url, dict(http.headers), bytes(http.body)
            actions = frozenset({"delete"} if live.running else {"run", "delete"})
        elif entry.records:
            first = entry.records[0]
            method, url, body = first.method, first.url, first.body
            headers = {key: value for key, value in first.headers.items() if key.lower() != "authorization"}
            actions = frozenset()
        else:
            method, url, headers, body, actions = None, None, {}, b"", frozenset()
        return TaskDetail(
            view=entry.view,
            method=method,
            url=url,
            arguments=_arguments(body),
            headers=headers,
            body_excerpt=body[:_EXCERPT].decode("utf-8", "replace") if body else None,
            attempts=[_attempt(record) for record in entry.records],
            actions=actions,
        )

    async def task_action(self, name: str, action: Literal["run", "delete", "replay"]) -> str:
        """Run a stored task now, or delete it; the emulator has nothing to replay."""
        if action == "replay":
            raise ConsoleActionError("the emulator keeps no dead letters to replay: run or delete a stored task")
        full = await self._on_loop(lambda: self._stored_task_name(name))
        if action == "run":
            return await self._act("RunTask", full, f"Task {_short(full)} started.")
        if action == "delete":
            return await self._act("DeleteTask", full, f"Task {_short(full)} deleted.")
        raise ConsoleActionError(f"unknown task action {action!r}")

    def _stored_task_name(self, name: str) -> str:
        for queue in self.server.tasks._queues.values():
            for state in queue.tasks.values():
                if name in (state.pb.name, state.task_id):
                    return str(state.pb.name)
        raise ConsoleActionError(f"task {_short(name)} is not stored any more (it finished or was deleted)")

    def _entries(self) -> list[_Entry]:
        """Every task the emulator knows of, newest first."""
        by_source: dict[str, list[DeliveryRecord]] = collections.defaultdict(list)
        for record in self.server.recorder.records:
            if "/tasks/" in record.source:
                by_source[record.source].append(record)
        paths: dict[str, str] = {}
        entries: list[_Entry] = []
        for queue in self.server.tasks._queues.values():
            for state in queue.tasks.values():
                entries.append(_live_entry(state, by_source.pop(state.pb.name, ()), paths))
        for source, records in by_source.items():
            entries.append(_finished_entry(source, records))
        tasks = self.server.tasks
        for name, expiry in tasks._tombstones.items():
            if name not in by_source:  # only its tombstone is left
                entries.append(self._ended_entry(name, expiry))
        entries.extend(self._job_runs())
        entries.sort(key=lambda entry: (entry.sort_key, entry.name), reverse=True)
        return entries

    def _entry(self, name: str) -> _Entry | None:
        """The task or job run `name` (full name or short id), found without listing every task."""
        if name.startswith("job:"):
            return next((entry for entry in self._job_runs() if entry.name == name), None)
        short = _short(name)

        def named(candidate: str) -> bool:
            return candidate == name or (candidate.endswith("/tasks/" + short) and short == name)

        records = [record for record in self.server.recorder.records if named(record.source)]
        for queue in self.server.tasks._queues.values():
            state = queue.tasks.get(short)
            if state is not None and named(state.pb.name):
                return _live_entry(state, [r for r in records if r.source == state.pb.name], {})
        if records:
            source = records[-1].source
            return _finished_entry(source, [r for r in records if r.source == source])
        tasks = self.server.tasks
        for stored, expiry in tasks._tombstones.items():
            if named(stored):
                return self._ended_entry(stored, expiry)
        return None

    def _ended_entry(self, name: str, expiry: dt.datetime) -> _Entry:
        """A task known only from the tombstone that keeps its name taken.

        With attempts recorded, it ended without any: it was deleted or purged (`deleted`). When the recorder
        keeps nothing (the command line's emulator), it may as well have run: `ended` says only that.
        """
        status = "deleted" if self.server.recorder._records.maxlen != 0 else "ended"
        return _ended_entry(name, expiry - dt.timedelta(seconds=self.server.tasks.tombstone_seconds), status)

    def _job_runs(self) -> list[_Entry]:
        scheduler = self.server.scheduler
        if scheduler is None:
            return []
        runs: dict[tuple[str, dt.datetime | None, bool], list[DeliveryRecord]] = collections.defaultdict(list)
        for record in scheduler.deliveries:
            runs[record.source, record.schedule_time, record.forced].append(record)
        waiting = {(e.job.pb.name, e.schedule_time) for e in scheduler._waiting}
        entries = []
        for (job, scheduled, _forced), records in runs.items():
            last = records[-1]
            when = scheduled or records[0].time
            name = f"job:{job.rpartition('/')[2]}@{when.isoformat()}"
            status = "succeeded" if last.ok else ("retrying" if (job, scheduled) in waiting else "failed")
            view = TaskView(
                name=name,
                short_name=name,
                queue=None,
                endpoint=_path(last.url),
                status=status,
                created_at=when,
                last_attempt_at=last.time,
                attempts=len(records),
                last_status_code=last.status,
            )
            entries.append(_Entry(when.timestamp(), name, None, view.endpoint, status, None, records, made=view))
        return entries

    # dead letters: the emulator has none -----------------------------------------------------------------------

    async def dead_letters(self, *, cursor: str | None = None, limit: int = 50) -> Page[LetterView]:
        """Always empty: dead letters live in the app's `DeadLetterStore`, not in the emulator."""
        return Page(items=(), next_cursor=None)

    async def letter_action(self, letter_id: str, action: Literal["replay", "discard"]) -> str:
        """Refused: the emulator keeps no dead letters."""
        raise ConsoleActionError("the emulator keeps no dead letters; use the console mounted in your app")

    # schedules -------------------------------------------------------------------------------------------------

    async def schedules(self) -> list[JobView]:
        """The emulator's Cloud Scheduler jobs, sorted by name."""
        return await self._on_loop(self._schedules)

    def _schedules(self) -> list[JobView]:
        scheduler = self.server.scheduler
        if scheduler is None:
            return []
        last_status: dict[str, str] = {}
        for record in scheduler.deliveries:
            last_status[record.source] = str(record.status) if record.status is not None else (record.error or "")
        views = []
        for name in sorted(scheduler._jobs):
            stored = scheduler._jobs[name]
            pb = stored.pb
            target = pb.http_target.uri if pb.WhichOneof("target") == "http_target" else pb.WhichOneof("target")
            views.append(
                JobView(
                    name=name,
                    short_name=name.rpartition("/")[2],
                    schedule=pb.schedule or None,
                    time_zone=pb.time_zone or None,
                    state=_JOB_STATES.get(pb.state, "UNKNOWN"),
                    next_run=stored.next_run if _JOB_STATES.get(pb.state) == "ENABLED" else None,
                    last_attempt_status=last_status.get(name),
                    target=target,
                    planned=False,
                    deployed=True,
                )
            )
        return views

    async def job_action(self, name: str, action: Literal["pause", "resume", "run"]) -> str:
        """Pause, resume or run now the job `name` (full name or short id)."""
        scheduler = self.server.scheduler
        if scheduler is None:
            raise ConsoleActionError("this emulator runs without Cloud Scheduler")
        full = await self._on_loop(lambda: self._job_name(name))
        done = {"pause": "paused", "resume": "resumed", "run": "started"}
        if action in done:
            return await self._act(f"{action.title()}Job", full, f"Job {_short(full)} {done[action]}.")
        raise ConsoleActionError(f"unknown job action {action!r}")

    def _job_name(self, name: str) -> str:
        jobs = self.server.scheduler._jobs
        if name in jobs:
            return name
        matches: list[str] = [full for full in jobs if full.rpartition("/")[2] == name]
        if len(matches) != 1:
            raise ConsoleActionError(f"no job {name!r}" if not matches else f"job id {name!r} is ambiguous")
        return matches[0]

    # the clock -------------------------------------------------------------------------------------------------

    async def advance_clock(self, seconds: float) -> str:
        """Move the emulator's `ManualClock` forward; what became due runs."""
        clock = self.server.clock
        if not isinstance(clock, ManualClock):
            raise ConsoleActionError("the emulator runs on the system clock, which cannot be moved")
        if not seconds > 0:
            raise ConsoleActionError(f"advance the clock by a positive number of seconds, not {seconds:g}")
        now = clock.advance(seconds)
        return f"Clock advanced by {seconds:g} s to {now:%Y-%m-%d %H:%M:%S} UTC."


def _last_record(records: collections.deque[DeliveryRecord]) -> object:
    """The newest record's identity: the deque is bounded, so its length alone stops changing once full."""
    try:
        last = records[-1]
    except IndexError:
        return None
    return (len(records), last.source, last.attempt, last.time)


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


def _short(name: str) -> str:
    return name.rpartition("/")[2]


def _timestamp(value: Any) -> dt.datetime | None:
    if not value.seconds and not value.nanos:
        return None
    return dt.datetime.fromtimestamp(value.seconds + value.nanos / 1e9, dt.UTC)


def _live_entry(state: TaskState, records: Sequence[DeliveryRecord], paths: dict[str, str]) -> _Entry:
    """A stored task; `paths` caches URL paths across the tasks of one listing (most share a few URLs)."""
    pb = state.pb
    if state.running:
        status = "running"
    elif pb.dispatch_count == 0:
        status = "pending"
    else:
        status = "retrying"
    url = pb.http_request.url
    endpoint = paths.get(url)
    if endpoint is None:
        endpoint = paths[url] = _path(url)
    created = pb.create_time
    return _Entry(
        created.seconds + created.nanos / 1e9, pb.name, state.queue.queue_id, endpoint, status, state, records
    )


def _live_view(entry: _Entry) -> TaskView:
    state = entry.live
    assert state is not None
    pb = state.pb
    return TaskView(
        name=entry.name,
        short_name=state.task_id,
        queue=entry.queue,
        endpoint=entry.endpoint,
        status=entry.status,
        created_at=_timestamp(pb.create_time),
        last_attempt_at=_timestamp(pb.last_attempt.dispatch_time) if pb.dispatch_count else None,
        attempts=int(pb.dispatch_count),
        last_status_code=state.previous_response,
    )


def _finished_entry(source: str, records: Sequence[DeliveryRecord]) -> _Entry:
    """A task the emulator no longer stores: it succeeded, gave up, or was deleted after these attempts."""
    last = records[-1]
    queue = source.rpartition("/tasks/")[0].rpartition("/")[2]
    view = TaskView(
        name=source,
        short_name=_short(source),
        queue=queue,
        endpoint=_path(last.url),
        status="failed" if last.gave_up or not last.ok else "succeeded",
        created_at=None,
        last_attempt_at=last.time,
        attempts=len(records),
        last_status_code=last.status,
    )
    return _Entry(records[0].time.timestamp(), source, queue, view.endpoint, view.status, None, records, made=view)


def _ended_entry(name: str, when: dt.datetime, status: str) -> _Entry:
    queue = name.rpartition("/tasks/")[0].rpartition("/")[2]
    view = TaskView(
        name=name,
        short_name=_short(name),
        queue=queue,
        endpoint=None,
        status=status,
        created_at=None,
        last_attempt_at=None,
        attempts=0,
        last_status_code=None,
    )
    return _Entry(when.timestamp(), name, queue, None, status, None, (), made=view)


def _attempt(record: DeliveryRecord) -> AttemptView:
    if record.gave_up:
        outcome = "gave_up"
    elif record.ok:
        outcome = "succeeded"
    elif record.status is None:
        outcome = "timeout" if record.error and "deadline" in record.error else "unreachable"
    else:
        outcome = "failed"
    return AttemptView(
        started_at=record.time,
        duration_ms=record.latency * 1000,
        status_code=record.status,
        outcome=outcome,
        error=record.error,
        trace_id=_trace_id(record.headers.items()),
        body_excerpt=record.response_excerpt.decode("utf-8", "replace") if record.response_excerpt else None,
    )


def _trace_id(headers: Iterable[tuple[str, str]]) -> str | None:
    """The trace id of a W3C `traceparent` or a `X-Cloud-Trace-Context` request header, if any."""
    for key, value in headers:
        name = key.lower()
        if name == "traceparent":
            parts = value.split("-")
            return parts[1] if len(parts) >= 3 else None
        if name == "x-cloud-trace-context":
            return value.split("/", 1)[0] or None
    return None


def _arguments(body: bytes) -> dict[str, Any] | None:
    """The JSON object a task's body holds (its body arguments), or None for any other body."""
    if not body:
        return None
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class EmulatorConsole:
    """The console over `EmulatorBackend`, as the emulator mounts it at the root of its HTTP port.

    Built on the first request, so an emulator that nobody opens the console of never loads FastAPI and
    Jinja2. Served to loopback clients only (`local_only`): the emulator has no users to authenticate, and
    binds loopback unless told otherwise. Without Jinja2 (the `console` extra) it answers 501 naming the extra.
    """

    def __init__(self, server: EmulatorServer) -> None:
        """Serve the console of `server`."""
        self.server = server
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Build the console once, then hand it the request."""
        if scope["type"] != "http":
            return
        if self._app is None:
            try:
                from fastapi_gcp_tasks.console._app import console_app
            except ImportError as exc:
                from starlette.responses import PlainTextResponse

                message = f"the emulator's console needs Jinja2: pip install 'fastapi-gcp-tasks[console]' ({exc})"
                await PlainTextResponse(message, status_code=501)(scope, receive, send)
                return
            self._app = console_app(EmulatorBackend(self.server), local_only=True)
        await self._app(scope, receive, send)
