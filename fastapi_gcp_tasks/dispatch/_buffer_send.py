"""Creating a buffer's tasks: concurrent and bounded, batched per queue, retried, then handed to a fallback.

Every buffered task is named before it is kept, so sending it twice is harmless: Cloud Tasks answers
ALREADY_EXISTS for the second copy. That is what makes retrying after a timeout or an UNAVAILABLE safe
here, while immediate `.delay()` of an unnamed task cannot retry.

A flush is one generator (`_flush_flow`) that decides everything: which calls a round makes, what each
outcome means, how long to wait before the next round, what goes to the fallback. It yields steps
(`_Send`, `_Wait`, `_Await`) and a sync and an async runner carry them out; an exception a runner meets
while carrying out a step (a cancellation, an interrupt) is thrown back into the flow, which settles what
it still held before the exception goes on.

Accounting. A `Ledger` holds the tasks of one flush and settles each exactly once, adding to the shared
`BufferStats` at that moment: created, already existed, handed to the fallback (counted once the fallback
returned), or lost (logged at ERROR with the task's name). So at any time
`kept == created + already_existed + discarded + failed + lost + pending`, and `pending` is only what is
still on its way.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import logging
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from google.cloud import tasks_v2

from fastapi_gcp_tasks.dispatch._sink import PreparedTask
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError, TaskArgumentError
from fastapi_gcp_tasks.transport._tasks import batches

__all__ = [
    "PROCESS_BUFFER_STATS",
    "BufferFallback",
    "BufferStats",
    "FlushReport",
    "Ledger",
    "LostTask",
    "RetryPolicy",
    "SendConfig",
    "flush_tasks",
    "flush_tasks_async",
]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a buffer keeps trying to create tasks that failed with a retryable error.

    Waits grow from `initial_backoff` by `multiplier` up to `max_backoff`, each shortened by a random
    jitter of up to half, and stop after `attempts` tries in all or once `deadline` seconds have passed
    since the first try, whichever comes first.
    """

    attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    deadline: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise TaskArgumentError(f"attempts={self.attempts!r} must be an int >= 1", param="attempts")
        for param in ("initial_backoff", "max_backoff", "deadline"):
            value = getattr(self, param)
            if not isinstance(value, int | float) or value < 0:
                raise TaskArgumentError(f"{param}={value!r} must be a number >= 0", param=param)
        if not isinstance(self.multiplier, int | float) or self.multiplier < 1:
            raise TaskArgumentError(f"multiplier={self.multiplier!r} must be a number >= 1", param="multiplier")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 for the first retry)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier**retry)
        return ceiling * (0.5 + random.random() / 2)


@dataclass(frozen=True, slots=True)
class LostTask:
    """A buffered task that could not be created, with the last error it got."""

    task: PreparedTask
    error: BaseException

    @property
    def name(self) -> str:
        """The full task name, as returned by `.delay()`."""
        return self.task.name


class BufferFallback(Protocol):
    """Receives the tasks a buffer could not create after its retries.

    It may be a plain function or a coroutine function. If it raises, or is cancelled, every task it
    was given is logged as lost, with its name, and counted in `BufferStats.lost` instead of `failed`.
    """

    def __call__(self, lost: Sequence[LostTask], /) -> Awaitable[None] | None:
        """Take over `lost`: store them elsewhere, alert, or re-raise to have them logged as lost."""
        ...


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What a flush did: tasks created, tasks that already existed, and tasks that could not be created
    (`failed`: handed to the fallback, or logged as lost when there is none or it raised)."""

    created: int = 0
    already_existed: int = 0
    failed: tuple[LostTask, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every task was created (or already existed)."""
        return not self.failed


_COUNTERS = ("kept", "created", "already_existed", "discarded", "failed", "lost", "retried", "calls")
_OUTCOMES = ("created", "already_existed", "discarded", "failed", "lost")


@dataclass(eq=False)
class BufferStats:
    """Counters of buffered tasks, safe to share between buffers, threads and middleware instances.

    `kept`: tasks that entered a buffer. Each of them ends in exactly one of `created`, `already_existed`
    (Cloud Tasks answered ALREADY_EXISTS: a retry of a call whose answer was lost, or a reused task_id),
    `discarded` (dropped with its request, the reason logged), `failed` (handed to the fallback, which
    returned) or `lost` (logged at ERROR with its name: no fallback, a raising or cancelled fallback, a
    cancelled flush, a shutdown that came first). `pending` is what has not ended yet. `retried`: task
    sends retried; `calls`: create_task and batch_create_tasks calls made.
    """

    kept: int = 0
    created: int = 0
    already_existed: int = 0
    discarded: int = 0
    failed: int = 0
    lost: int = 0
    retried: int = 0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to several counters at once."""
        with self._lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)

    def snapshot(self) -> dict[str, int]:
        """The counters as a dict, read consistently."""
        with self._lock:
            return {key: getattr(self, key) for key in _COUNTERS}

    @property
    def pending(self) -> int:
        """Tasks kept that have not ended yet: `kept` minus every outcome (0 once all buffers are done)."""
        with self._lock:
            ended: int = sum(getattr(self, key) for key in _OUTCOMES)
            return self.kept - ended


PROCESS_BUFFER_STATS = BufferStats()
"""Every buffer of the process also counts here (`SendConfig.count`): `pending == 0` when no buffered task of
the process is waiting to be created (`fastapi_gcp_tasks.testing.wait_for_tasks` waits on it)."""


@dataclass(frozen=True, slots=True)
class SendConfig:
    """Everything a buffer needs to create its tasks, validated once and shared by every buffer."""

    retry: RetryPolicy
    fallback: BufferFallback | None
    max_concurrency: int
    batch_from: int
    stats: BufferStats
    logger: logging.Logger

    def __post_init__(self) -> None:
        if not isinstance(self.retry, RetryPolicy):
            raise TaskArgumentError(f"retry={self.retry!r} must be a RetryPolicy", param="retry")
        if self.fallback is not None and not callable(self.fallback):
            raise TaskArgumentError(f"fallback={self.fallback!r} must be callable", param="fallback")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise TaskArgumentError(
                f"max_concurrency={self.max_concurrency!r} must be an int >= 1", param="max_concurrency"
            )
        if not isinstance(self.batch_from, int) or self.batch_from < 2:
            raise TaskArgumentError(f"batch_from={self.batch_from!r} must be an int >= 2", param="batch_from")
        if not isinstance(self.stats, BufferStats):
            raise TaskArgumentError(f"stats={self.stats!r} must be a BufferStats", param="stats")

    def count(self, **counts: int) -> None:
        """Add to the buffer's counters and to the process's (`PROCESS_BUFFER_STATS`)."""
        self.stats.add(**counts)
        if self.stats is not PROCESS_BUFFER_STATS:
            PROCESS_BUFFER_STATS.add(**counts)


Ended = Literal["created", "already_existed", "failed"]


class Ledger:
    """The tasks of one flush, each settled exactly once; the first settlement of a task wins.

    Settling adds to the counters at once, so they add up at every moment, also when the flush is cut
    short; `abandon` settles whatever is still open as lost (a cancellation, a shutdown, the process
    exiting), logging each task by name.
    """

    def __init__(self, tasks: Sequence[PreparedTask], config: SendConfig) -> None:
        self.tasks: tuple[PreparedTask, ...] = tuple(tasks)
        self.config = config
        self._open = set(range(len(self.tasks)))
        self._lock = threading.Lock()
        self._held: dict[int, BaseException] = {}
        _unfinished.add(self)

    def hold(self, errors: dict[int, BaseException]) -> None:
        """The tasks of `errors` could not be created and are with the fallback now."""
        with self._lock:
            self._held = dict(errors)

    def _close(self, indices: Sequence[int]) -> list[int]:
        with self._lock:
            closed = [index for index in indices if index in self._open]
            self._open.difference_update(closed)
            if not self._open:
                _unfinished.discard(self)
        return closed

    def settle(self, indices: Sequence[int], outcome: Ended) -> int:
        """Record `outcome` for the tasks of `indices` still open; returns how many that was."""
        if not indices:
            return 0
        closed = self._close(indices)
        if closed:
            self.config.count(**{outcome: len(closed)})
            if outcome == "created":
                for index in closed:
                    self.tasks[index].mark_created("buffered")
        return len(closed)

    def lose(self, lost: Sequence[tuple[int, BaseException]], why: str) -> int:
        """Settle as lost, logging each task still open at ERROR with its name, `why` and its error."""
        errors = dict(lost)
        closed = self._close(list(errors))
        for index in closed:
            self.config.logger.error("task %s was not created (%s): %r", self.tasks[index].name, why, errors[index])
        if closed:
            self.config.count(lost=len(closed))
        return len(closed)

    def abandon(self, why: str, error: BaseException | None = None) -> int:
        """Settle every open task as lost (the flush will not finish); returns how many there were."""
        with self._lock:
            still = sorted(self._open)
            held = self._held
        failure = error if error is not None else asyncio.CancelledError()
        lost = [(index, held.get(index, failure)) for index in still]
        if held:
            return self.lose(lost, f"{why} while the fallback held it; the fallback may have kept it")
        return self.lose(lost, f"{why} while it was being created; it may have been created")


_unfinished: weakref.WeakSet[Ledger] = weakref.WeakSet()


@atexit.register
def _report_unfinished() -> None:
    # The last place to name tasks whose flush never finished: an event loop closed without cancelling
    # its tasks, a server that exits without a lifespan shutdown.
    for ledger in list(_unfinished):
        ledger.abandon("the process exited before its flush finished")


@dataclass(frozen=True, slots=True)
class _Send:
    """One round of calls: batches of one sender and queue, and tasks sent one by one.

    The runner adds each call's outcomes to `done` as the call returns, so that a round cut short still
    tells which tasks it created.
    """

    batches: list[list[int]]
    singles: list[int]
    done: list[tuple[int, tasks_v2.Task | BaseException]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Wait:
    seconds: float


@dataclass(frozen=True, slots=True)
class _Await:
    """The awaitable an async fallback returned."""

    awaitable: Awaitable[None]


Step = _Send | _Wait | _Await
Outcome = tasks_v2.Task | BaseException
Flow = Generator[Step, None, FlushReport]


def _round(ledger: Ledger, pending: Sequence[int], batching: bool) -> _Send:
    if not batching:
        return _Send([], list(pending))
    tasks = ledger.tasks
    chunks = batches(pending, lambda index: (id(tasks[index].sender), tasks[index].queue_path))
    batch_from = ledger.config.batch_from
    singles = [index for chunk in chunks if len(chunk) < batch_from for index in chunk]
    return _Send([chunk for chunk in chunks if len(chunk) >= batch_from], singles)


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "the flush was cancelled"
    return f"the flush was interrupted by {type(exc).__name__}"


def _flush_flow(ledger: Ledger, *, batching: bool) -> Flow:
    """Create the ledger's tasks: rounds of calls with backoff in between, then the fallback."""
    config = ledger.config
    created = already_existed = 0
    failed: list[tuple[int, LostTask]] = []
    pending = list(range(len(ledger.tasks)))
    started = time.monotonic()
    retry = 0
    current: _Send | None = None
    try:
        while pending:
            current = _round(ledger, pending, batching)
            yield current
            outcomes, current = current.done, None
            again: list[tuple[int, BaseException]] = []
            made: list[int] = []
            existed: list[int] = []
            for index, outcome in outcomes:
                task = ledger.tasks[index]
                if isinstance(outcome, tasks_v2.Task):
                    made.append(index)
                elif isinstance(outcome, TaskAlreadyExistsError):
                    existed.append(index)
                    config.logger.info("task %s already existed; not created again", task.name)
                elif isinstance(outcome, SendError) and outcome.retryable:
                    again.append((index, outcome))
                else:
                    failed.append((index, LostTask(task, outcome)))
            created += ledger.settle(made, "created")
            already_existed += ledger.settle(existed, "already_existed")
            pending = []
            if not again:
                break
            wait = config.retry.backoff(retry)
            if retry + 1 >= config.retry.attempts or time.monotonic() - started + wait > config.retry.deadline:
                failed.extend((index, LostTask(ledger.tasks[index], error)) for index, error in again)
                break
            retry += 1
            config.count(retried=len(again))
            config.logger.info("retrying %d task(s) in %.2fs after retryable errors", len(again), wait)
            pending = [index for index, _ in again]
            yield _Wait(wait)
        if failed:
            yield from _hand_over(ledger, failed)
    except BaseException as exc:
        done = current.done if current is not None else []
        ledger.settle([index for index, outcome in done if isinstance(outcome, tasks_v2.Task)], "created")
        ledger.settle([i for i, outcome in done if isinstance(outcome, TaskAlreadyExistsError)], "already_existed")
        ledger.abandon(_why(exc), exc)
        raise
    return FlushReport(created, already_existed, tuple(item for _, item in failed))


def _hand_over(ledger: Ledger, failed: Sequence[tuple[int, LostTask]]) -> Generator[Step, None, None]:
    """Give the tasks that could not be created to the fallback, or log them as lost."""
    config = ledger.config
    indices = [index for index, _ in failed]
    if config.fallback is None:
        ledger.lose([(index, item.error) for index, item in failed], "it failed and there is no fallback")
        return
    lost = [item for _, item in failed]
    ledger.hold({index: item.error for index, item in failed})
    try:
        result = config.fallback(lost)
        if inspect.isawaitable(result):
            yield _Await(result)
    except Exception as exc:
        config.logger.error("the buffer fallback raised; %d task(s) are lost", len(lost), exc_info=exc)
        ledger.lose([(index, item.error) for index, item in failed], "the fallback raised")
        return
    ledger.settle(indices, "failed")


def _unexpected(config: SendConfig, tasks: Sequence[PreparedTask], exc: Exception) -> Exception:
    names = ", ".join(task.name for task in tasks)
    config.logger.error("creating task(s) %s raised an unexpected error", names, exc_info=exc)
    return exc


async def _send_async(ledger: Ledger, step: _Send, limit: asyncio.Semaphore) -> None:
    config = ledger.config
    tasks = ledger.tasks

    async def one(index: int) -> None:
        task = tasks[index]
        async with limit:
            config.count(calls=1)
            try:
                outcome: Outcome = await task.sender.send_async(task.request, timeout=task.timeout)
            except FastAPIGCPTasksError as exc:
                outcome = exc
            except Exception as exc:  # noqa: BLE001 - recorded as the task's failure
                outcome = _unexpected(config, [task], exc)
        step.done.append((index, outcome))

    async def batch(chunk: list[int]) -> None:
        members = [tasks[index] for index in chunk]
        async with limit:
            config.count(calls=1)
            timeout = max(task.timeout for task in members)
            try:
                results: Sequence[Outcome] = await members[0].sender.send_batch_async(
                    [task.request for task in members], timeout=timeout
                )
            except FastAPIGCPTasksError as exc:
                results = [exc] * len(chunk)
            except Exception as exc:  # noqa: BLE001 - recorded as every task's failure
                results = [_unexpected(config, members, exc)] * len(chunk)
        if len(results) != len(chunk):
            failure = SendError(f"batch sender returned {len(results)} results for {len(chunk)}", retryable=False)
            results = [failure] * len(chunk)
        step.done.extend(zip(chunk, results, strict=True))

    calls = [batch(chunk) for chunk in step.batches] + [one(index) for index in step.singles]
    if len(calls) == 1:
        await calls[0]
    else:
        await asyncio.gather(*calls)


def _send(ledger: Ledger, step: _Send, pool: ThreadPoolExecutor) -> None:
    config = ledger.config

    def one(index: int) -> None:
        task = ledger.tasks[index]
        config.count(calls=1)
        try:
            outcome: Outcome = task.sender.send(task.request, timeout=task.timeout)
        except FastAPIGCPTasksError as exc:
            outcome = exc
        except Exception as exc:  # noqa: BLE001 - recorded as the task's failure
            outcome = _unexpected(config, [task], exc)
        step.done.append((index, outcome))

    if len(step.singles) == 1:
        one(step.singles[0])
    else:
        list(pool.map(one, step.singles))


async def flush_tasks_async(ledger: Ledger) -> FlushReport:
    """Create the ledger's tasks from the running loop, batching per queue; failures go to the fallback."""
    flow = _flush_flow(ledger, batching=True)
    limit = asyncio.Semaphore(ledger.config.max_concurrency)
    error: BaseException | None = None
    while True:
        try:
            step = next(flow) if error is None else flow.throw(error)
        except StopIteration as done:
            report: FlushReport = done.value
            return report
        error = None
        try:
            if isinstance(step, _Send):
                await _send_async(ledger, step, limit)
            elif isinstance(step, _Wait):
                await asyncio.sleep(step.seconds)
            else:
                await step.awaitable
        except BaseException as exc:  # noqa: BLE001 - thrown into the flow, which settles and re-raises
            error = exc


def flush_tasks(ledger: Ledger) -> FlushReport:
    """Create the ledger's tasks from a thread that may block, one `create_task` each in a bounded pool."""
    flow = _flush_flow(ledger, batching=False)
    error: BaseException | None = None
    workers = min(ledger.config.max_concurrency, max(len(ledger.tasks), 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        while True:
            try:
                step = next(flow) if error is None else flow.throw(error)
            except StopIteration as done:
                report: FlushReport = done.value
                return report
            error = None
            try:
                if isinstance(step, _Send):
                    _send(ledger, step, pool)
                elif isinstance(step, _Wait):
                    time.sleep(step.seconds)
                else:
                    _run_awaitable(step.awaitable)
            except BaseException as exc:  # noqa: BLE001 - thrown into the flow, which settles and re-raises
                error = exc


def _run_awaitable(awaitable: Awaitable[None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        close: Callable[[], Any] | None = getattr(awaitable, "close", None)
        if close is not None:
            close()
        raise RuntimeError("an async fallback cannot run from a sync flush inside an event loop: use `async with`")

    async def wait() -> None:
        await awaitable

    asyncio.run(wait())
