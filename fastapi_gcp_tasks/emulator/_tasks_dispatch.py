"""The Cloud Tasks dispatcher of the emulator: when each task is attempted, and what comes of the attempt.

Creating a task stores it and asks for a "pump" of its queue. The pump, run once per loop iteration
however many tasks arrived, starts every attempt the queue may start now (schedule time reached, a free
slot under `max_concurrent_dispatches`, a token in the `max_dispatches_per_second` bucket) and sets one
timer for the next moment something may become possible. Each attempt in flight runs in an asyncio task
of its own, so a hanging worker only holds its own slot until its deadline (`_delivery.deliver_on_clock`);
a task whose attempt ends goes on with the queue's next due attempt, so a busy queue does not create a
task per delivery. A failed attempt is retried under the queue's `retry_config` (`_rpc.backoff`, shared
with Cloud Scheduler).

Everything here runs on the emulator's event loop (see `_rpc.py`); `TasksService` (`_tasks_service.py`)
adds the RPCs on top of this state.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import email.utils
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

from fastapi_gcp_tasks._limits import MAX_TASK_RETENTION
from fastapi_gcp_tasks.emulator._clock import Cancellable, call_at
from fastapi_gcp_tasks.emulator._delivery import deliver_on_clock, logger
from fastapi_gcp_tasks.emulator._oidc import TokenSigner
from fastapi_gcp_tasks.emulator._rpc import METHODS, attempt_status, backoff, seconds
from fastapi_gcp_tasks.emulator._tasks_validation import RUNNING, set_time
from fastapi_gcp_tasks.emulator._types import Clock, Deliverer, DeliveryRequest, DeliveryResult

__all__ = ["Dispatcher", "QueueState", "TaskState", "backoff_seconds"]

_Claimed = tuple["TaskState", DeliveryRequest]
"""An attempt begun by `_pump` for the caller to run: the task and its request."""

_RESERVED_HEADERS = ("host", "content-length", "user-agent", "x-cloudtasks-", "x-google-", "x-appengine-")
"""Headers of a task's request that Cloud Tasks replaces or drops (Authorization too, see `_static_headers`)."""


@dataclass(eq=False, slots=True)
class TaskState:
    """A stored task and what the dispatcher needs to know about it."""

    pb: Any
    queue: QueueState
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
class QueueState:
    """A queue, its tasks and the state of its dispatch."""

    pb: Any
    queue_id: str
    tasks: dict[str, TaskState] = field(default_factory=dict)
    heap: list[tuple[dt.datetime, int, TaskState]] = field(default_factory=list)
    inflight: int = 0
    tokens: float = 0.0
    refilled: dt.datetime | None = None
    timer: Cancellable | None = None
    timer_when: dt.datetime | None = None
    pump_pending: bool = False
    deleted: bool = False

    @property
    def running(self) -> bool:
        return bool(self.pb.state == RUNNING)


def backoff_seconds(retry: Any, retries: int) -> float:
    """The delay before retry number `retries` (0 for the first retry) under a queue's `retry_config`."""
    return backoff(seconds(retry.min_backoff), seconds(retry.max_backoff), retry.max_doublings, retries)


def retry_after_seconds(result: DeliveryResult, now: dt.datetime) -> float | None:
    """The wait a `Retry-After` header asks for, per RFC 9110: whole seconds (`1*DIGIT`) or an HTTP-date.

    Anything else is ignored, as is a date in the past (no wait). The wait is capped at the longest a
    task can live (31 days), so that no answer can push the retry out of the calendar.
    """
    value = result.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        wait = float(value) if len(value) <= 12 else _RETRY_AFTER_CAP
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        wait = max((when - now).total_seconds(), 0.0)
    return min(wait, _RETRY_AFTER_CAP)


_RETRY_AFTER_CAP = MAX_TASK_RETENTION.total_seconds()


class Dispatcher:
    """The tasks of every queue, their timers and attempts in flight, and the names that stay taken."""

    def __init__(self, *, clock: Clock, deliverer: Deliverer, signer: TokenSigner, tombstone_seconds: float) -> None:
        """Dispatch over `deliverer` on `clock`; a finished or deleted task's name stays taken `tombstone_seconds`."""
        self.clock = clock
        self.deliverer = deliverer
        self.signer = signer
        self.tombstone_seconds = tombstone_seconds
        self._queues: dict[str, QueueState] = {}
        self._tombstones: dict[str, dt.datetime] = {}
        self._tombstone_order: collections.deque[tuple[dt.datetime, str]] = collections.deque()
        self._attempts: set[asyncio.Task[None]] = set()
        self._seq = itertools.count()
        self._heap_keys = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False

    # tombstones ------------------------------------------------------------------------------------------------

    def _tombstoned(self, name: str, now: dt.datetime) -> bool:
        expiry = self._tombstones.get(name)
        return expiry is not None and expiry > now

    def _forget(self, state: TaskState, now: dt.datetime) -> None:
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

    def _push(self, queue: QueueState, state: TaskState) -> None:
        key = next(self._heap_keys)
        state.heap_key = key
        heapq.heappush(queue.heap, (state.when, key, state))
        self._request_pump(queue)

    def _request_pump(self, queue: QueueState) -> None:
        """Run `_pump(queue)` soon on the loop, once however often it is asked for."""
        if queue.pump_pending or self._loop is None or self._stopped or not queue.running:
            return
        queue.pump_pending = True
        self._loop.call_soon(self._pump, queue)

    def _cancel_timer(self, queue: QueueState) -> None:
        if queue.timer is not None:
            queue.timer.cancel()
            queue.timer = None
            queue.timer_when = None

    def _wake_at(self, queue: QueueState, when: dt.datetime) -> None:
        if queue.timer is not None and queue.timer_when is not None and queue.timer_when <= when:
            return
        self._cancel_timer(queue)
        queue.timer_when = when
        queue.timer = call_at(self.clock, when, lambda: self._on_timer(queue))

    def _on_timer(self, queue: QueueState) -> None:
        queue.timer = None
        queue.timer_when = None
        self._request_pump(queue)

    def _pump(self, queue: QueueState, *, claim: bool = False) -> _Claimed | None:
        """Start every attempt the queue allows now; set a timer for the next possible one.

        With `claim`, the first attempt is not given an asyncio task of its own but returned, for the
        caller (an attempt's task that just finished) to run next.
        """
        queue.pump_pending = False
        if queue.deleted or self._stopped or not queue.running:
            return None
        heap = queue.heap
        if not heap:
            return None
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
        claimed: _Claimed | None = None
        while heap:
            when, key, state = heap[0]
            if state.heap_key != key:
                heapq.heappop(heap)
                continue
            if when > now:
                self._wake_at(queue, when)
                break
            if queue.inflight >= limit:
                break
            if queue.tokens < 1.0:
                self._wake_at(queue, now + dt.timedelta(seconds=(1.0 - queue.tokens) / per_second))
                break
            queue.tokens -= 1.0
            heapq.heappop(heap)
            state.heap_key = -1
            delivery = self._begin_attempt(queue, state, now)
            if claim and claimed is None:
                claimed = (state, delivery)
            else:
                self._spawn(queue, state, delivery)
        return claimed

    def _start_attempt(self, queue: QueueState, state: TaskState) -> None:
        """Start an attempt of `state` now, in its own asyncio task (RunTask, whatever the queue's limits)."""
        self._spawn(queue, state, self._begin_attempt(queue, state, self.clock.now()))

    def _spawn(self, queue: QueueState, state: TaskState, delivery: DeliveryRequest) -> None:
        assert self._loop is not None
        attempt_task = self._loop.create_task(self._attempt(queue, state, delivery))
        self._attempts.add(attempt_task)
        attempt_task.add_done_callback(self._attempts.discard)

    def _begin_attempt(self, queue: QueueState, state: TaskState, now: dt.datetime) -> DeliveryRequest:
        """Count the attempt on the task now (as the API shows it) and build its request."""
        pb = state.pb
        http = pb.http_request
        static = state.static_headers
        if static is None:
            static = state.static_headers = self._static_headers(queue, state)
        headers = {
            **static,
            "X-CloudTasks-TaskRetryCount": str(pb.dispatch_count),
            "X-CloudTasks-TaskExecutionCount": str(state.execution_count),
            "X-CloudTasks-TaskETA": f"{state.when.timestamp():.6f}",
        }
        if state.previous_response is not None:
            headers["X-CloudTasks-TaskPreviousResponse"] = str(state.previous_response)
        if state.retry_reason is not None:
            headers["X-CloudTasks-TaskRetryReason"] = state.retry_reason
        authorization = http.WhichOneof("authorization_header")
        if authorization == "oidc_token":
            token = http.oidc_token
            headers["Authorization"] = "Bearer " + self.signer.token(
                audience=token.audience or http.url, email=token.service_account_email, now=now
            )
        elif authorization == "oauth_token":
            headers["Authorization"] = f"Bearer emulator-oauth-token.{http.oauth_token.service_account_email}"
        attempt = pb.last_attempt
        attempt.Clear()
        attempt.schedule_time.CopyFrom(pb.schedule_time)
        set_time(attempt.dispatch_time, now)
        if state.first_dispatch is None:
            state.first_dispatch = now
            pb.first_attempt.dispatch_time.CopyFrom(attempt.dispatch_time)
        pb.dispatch_count += 1
        state.running = True
        queue.inflight += 1
        return DeliveryRequest(
            method=METHODS.get(http.http_method, "POST"),
            url=http.url,
            headers=headers,
            body=http.body,
            deadline=seconds(pb.dispatch_deadline),
            source=pb.name,
            attempt=pb.dispatch_count,
        )

    def _static_headers(self, queue: QueueState, state: TaskState) -> dict[str, str]:
        headers: dict[str, str] = {}
        for key, value in state.pb.http_request.headers.items():
            lower = key.lower()
            if not lower.startswith(_RESERVED_HEADERS) and lower != "authorization":
                headers[key] = value
        headers["User-Agent"] = "Google-Cloud-Tasks"
        headers["X-CloudTasks-QueueName"] = queue.queue_id
        headers["X-CloudTasks-TaskName"] = state.task_id
        return headers

    async def _attempt(self, queue: QueueState, state: TaskState, delivery: DeliveryRequest) -> None:
        """Deliver, settle, and go on with the queue's next due attempt in this same asyncio task.

        A finished attempt frees a slot; the attempt that takes it runs here rather than in a new asyncio
        task, so a busy queue keeps up to `max_concurrent_dispatches` tasks alive instead of creating one
        per delivery.
        """
        claimed: _Claimed | None = (state, delivery)
        while claimed is not None:
            state, delivery = claimed
            try:
                result = await deliver_on_clock(self.deliverer, delivery, self.clock)
            except BaseException:
                self._finish(queue, state, None, claim=False)
                raise
            claimed = self._finish(queue, state, result, claim=True)

    def _finish(
        self, queue: QueueState, state: TaskState, result: DeliveryResult | None, *, claim: bool
    ) -> _Claimed | None:
        """Settle an attempt (None: it was cancelled) and refill the freed slot now, not on a later loop iteration."""
        queue.inflight -= 1
        state.running = False
        try:
            if result is not None:
                self._settle(queue, state, result)
        except Exception:  # noqa: BLE001 - logged, and the task is kept rather than lost
            logger.exception("emulator: could not settle the attempt of %s; the task is kept", state.pb.name)
            if not state.gone:
                self._push(queue, state)
        if queue.deleted or self._stopped or not queue.running:
            return None
        return self._pump(queue, claim=claim)

    def _settle(self, queue: QueueState, state: TaskState, result: DeliveryResult) -> None:
        """Record the outcome on the task, then delete it or schedule its retry."""
        if state.gone or queue.deleted:
            return
        now = self.clock.now()
        pb = state.pb
        attempt = pb.last_attempt
        status = result.status
        attempt.response_status.code, attempt.response_status.message = attempt_status(
            result, http_message="HTTP status code {status}"
        )
        if status is not None:
            pb.response_count += 1
            set_time(attempt.response_time, now)
            if status < 500:
                state.execution_count += 1
            state.previous_response = status
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
            retry_after = retry_after_seconds(result, now)
            if retry_after is not None:
                delay = max(delay, retry_after)
        state.retry_reason = (
            f"HTTP {status}" if status is not None else ("DEADLINE_EXCEEDED" if result.timed_out else "UNAVAILABLE")
        )
        state.when = now + dt.timedelta(seconds=delay)
        set_time(pb.schedule_time, state.when)
        self._push(queue, state)

    @staticmethod
    def _exhausted(retry: Any, attempts: int, state: TaskState, now: dt.datetime) -> bool:
        max_duration = seconds(retry.max_retry_duration)
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
