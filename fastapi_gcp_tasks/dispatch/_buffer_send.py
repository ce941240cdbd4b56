"""Creating a buffer's tasks: concurrent and bounded, batched per queue, retried, then handed to a fallback.

Every buffered task is named before it is kept, so sending it twice is harmless: Cloud Tasks answers
ALREADY_EXISTS for the second copy, which counts as created. That is what makes retrying after a timeout
or an UNAVAILABLE safe here, while immediate `.delay()` of an unnamed task cannot retry.

The async and the sync paths share the bookkeeping (`_Round`) and differ only in how one round of calls
is made: `send_async` / `send_batch_async` under a semaphore, or `send` in a thread pool.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import threading
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from google.cloud import tasks_v2

from fastapi_gcp_tasks.dispatch._sink import PreparedTask
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError, TaskArgumentError
from fastapi_gcp_tasks.transport._tasks import batches

__all__ = [
    "BufferFallback",
    "BufferStats",
    "FlushReport",
    "LostTask",
    "RetryPolicy",
    "SendConfig",
    "hand_over",
    "hand_over_async",
    "send_all",
    "send_all_async",
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

    It may be a plain function or a coroutine function. If it raises, every task it was given is
    logged as lost, with its name, and counted in `BufferStats.lost`.
    """

    def __call__(self, lost: Sequence[LostTask], /) -> Awaitable[None] | None:
        """Take over `lost`: store them elsewhere, alert, or re-raise to have them logged as lost."""
        ...


@dataclass(frozen=True, slots=True)
class FlushReport:
    """What a flush did: tasks created, tasks that already existed, tasks that failed (handed to the fallback)."""

    created: int = 0
    already_existed: int = 0
    failed: tuple[LostTask, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether every task was created (or already existed)."""
        return not self.failed


@dataclass(eq=False)
class BufferStats:
    """Counters of buffered tasks, safe to share between buffers, threads and middleware instances.

    `kept`: tasks buffered; `created` / `already_existed`: outcomes of sending; `discarded`: dropped with
    a failed request; `failed`: handed to the fallback; `lost`: logged as lost (by the default fallback,
    a raising fallback, or a cancelled flush); `retried`: task sends retried; `calls`: create_task and
    batch_create_tasks calls made.
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
            return {
                key: getattr(self, key)
                for key in ("kept", "created", "already_existed", "discarded", "failed", "lost", "retried", "calls")
            }


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


Outcome = tasks_v2.Task | BaseException


class _Round:
    """The retry bookkeeping shared by the async and sync paths."""

    def __init__(self, config: SendConfig, tasks: Sequence[PreparedTask]) -> None:
        self.config = config
        self.pending: list[PreparedTask] = list(tasks)
        self.retry = 0
        self.created = 0
        self.already_existed = 0
        self.failed: list[LostTask] = []
        self._started = time.monotonic()

    def settle(self, outcomes: Sequence[tuple[PreparedTask, Outcome]]) -> float | None:
        """Record one round; returns the wait before the next round, or None when done."""
        retry: list[PreparedTask] = []
        last_error: dict[str, BaseException] = {}
        for task, outcome in outcomes:
            if isinstance(outcome, tasks_v2.Task):
                self.created += 1
            elif isinstance(outcome, TaskAlreadyExistsError):
                self.already_existed += 1
                self.config.logger.info("task %s already existed; not created again", task.name)
            elif isinstance(outcome, SendError) and outcome.retryable:
                retry.append(task)
                last_error[task.name] = outcome
            else:
                self.failed.append(LostTask(task, outcome))
        self.pending = []
        if not retry:
            return None
        wait = self.config.retry.backoff(self.retry)
        elapsed = time.monotonic() - self._started
        if self.retry + 1 >= self.config.retry.attempts or elapsed + wait > self.config.retry.deadline:
            self.failed.extend(LostTask(task, last_error[task.name]) for task in retry)
            return None
        self.retry += 1
        self.config.stats.add(retried=len(retry))
        self.config.logger.info("retrying %d task(s) in %.2fs after retryable errors", len(retry), wait)
        self.pending = retry
        return wait

    def report(self) -> FlushReport:
        self.config.stats.add(created=self.created, already_existed=self.already_existed, failed=len(self.failed))
        return FlushReport(self.created, self.already_existed, tuple(self.failed))


def _groups(tasks: Sequence[PreparedTask], batch_from: int) -> tuple[list[list[PreparedTask]], list[PreparedTask]]:
    """Split into batches (one sender and queue, at most 100) and tasks sent one by one (smaller chunks)."""
    chunks = batches(tasks, lambda task: (id(task.sender), task.queue_path))
    singles = [task for chunk in chunks if len(chunk) < batch_from for task in chunk]
    return [chunk for chunk in chunks if len(chunk) >= batch_from], singles


def _unexpected(config: SendConfig, task: PreparedTask, exc: Exception) -> Exception:
    config.logger.error("sending task %s raised an unexpected error", task.name, exc_info=exc)
    return exc


async def send_all_async(tasks: Sequence[PreparedTask], config: SendConfig) -> FlushReport:
    """Create `tasks` from the running loop; returns the report (failures are not handed over yet)."""
    state = _Round(config, tasks)
    limit = asyncio.Semaphore(config.max_concurrency)

    async def one(task: PreparedTask) -> list[tuple[PreparedTask, Outcome]]:
        async with limit:
            config.stats.add(calls=1)
            try:
                return [(task, await task.sender.send_async(task.request, timeout=task.timeout))]
            except FastAPIGCPTasksError as exc:
                return [(task, exc)]
            except Exception as exc:  # noqa: BLE001 - recorded as the task's failure
                return [(task, _unexpected(config, task, exc))]

    async def batch(chunk: list[PreparedTask]) -> list[tuple[PreparedTask, Outcome]]:
        async with limit:
            config.stats.add(calls=1)
            sender = chunk[0].sender
            timeout = max(task.timeout for task in chunk)
            try:
                results: Sequence[Outcome] = await sender.send_batch_async(
                    [task.request for task in chunk], timeout=timeout
                )
            except FastAPIGCPTasksError as exc:
                return [(task, exc) for task in chunk]
            except Exception as exc:  # noqa: BLE001 - recorded as every task's failure
                return [(task, _unexpected(config, chunk[0], exc)) for task in chunk]
            if len(results) != len(chunk):
                error = SendError(f"batch sender returned {len(results)} results for {len(chunk)}", retryable=False)
                return [(task, error) for task in chunk]
            return list(zip(chunk, results, strict=True))

    try:
        while state.pending:
            chunks, singles = _groups(state.pending, config.batch_from)
            calls: list[Awaitable[list[tuple[PreparedTask, Outcome]]]] = [batch(chunk) for chunk in chunks]
            calls.extend(one(task) for task in singles)
            rounds = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
            wait = state.settle([outcome for results in rounds for outcome in results])
            if wait is not None:
                await asyncio.sleep(wait)
    except asyncio.CancelledError:
        unsure = [*state.pending, *(item.task for item in state.failed)]
        _log_lost(config, [LostTask(task, asyncio.CancelledError()) for task in unsure], "the flush was cancelled")
        raise
    return state.report()


def send_all(tasks: Sequence[PreparedTask], config: SendConfig) -> FlushReport:
    """Create `tasks` from a thread that may block, one `create_task` each in a bounded thread pool."""
    state = _Round(config, tasks)

    def one(task: PreparedTask) -> tuple[PreparedTask, Outcome]:
        config.stats.add(calls=1)
        try:
            return task, task.sender.send(task.request, timeout=task.timeout)
        except FastAPIGCPTasksError as exc:
            return task, exc
        except Exception as exc:  # noqa: BLE001 - recorded as the task's failure
            return task, _unexpected(config, task, exc)

    with ThreadPoolExecutor(max_workers=min(config.max_concurrency, max(len(tasks), 1))) as pool:
        while state.pending:
            pending = state.pending
            outcomes = [one(pending[0])] if len(pending) == 1 else list(pool.map(one, pending))
            wait = state.settle(outcomes)
            if wait is not None:
                time.sleep(wait)
    return state.report()


def _log_lost(config: SendConfig, lost: Sequence[LostTask], why: str) -> None:
    for item in lost:
        config.logger.error("task %s was not created (%s): %r", item.name, why, item.error)
    config.stats.add(lost=len(lost))


def _fallback_failed(config: SendConfig, lost: Sequence[LostTask], exc: Exception) -> None:
    config.logger.error("the buffer fallback raised; %d task(s) are lost", len(lost), exc_info=exc)
    _log_lost(config, lost, "the fallback raised")


async def hand_over_async(lost: Sequence[LostTask], config: SendConfig) -> None:
    """Give failed tasks to the fallback (awaiting it if it is async), or log them as lost."""
    if not lost:
        return
    if config.fallback is None:
        _log_lost(config, lost, "retries exhausted")
        return
    try:
        result = config.fallback(lost)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # noqa: BLE001 - every task is logged as lost
        _fallback_failed(config, lost, exc)


def hand_over(lost: Sequence[LostTask], config: SendConfig) -> None:
    """Give failed tasks to the fallback from synchronous code (an async fallback runs in its own loop)."""
    if not lost:
        return
    if config.fallback is None:
        _log_lost(config, lost, "retries exhausted")
        return
    try:
        result = config.fallback(lost)
        if inspect.isawaitable(result):
            _run_awaitable(result)
    except Exception as exc:  # noqa: BLE001 - every task is logged as lost
        _fallback_failed(config, lost, exc)


def _run_awaitable(awaitable: Awaitable[None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()
        raise RuntimeError("an async fallback cannot run from a sync flush inside an event loop: use `async with`")

    async def wait() -> None:
        await awaitable

    asyncio.run(wait())
