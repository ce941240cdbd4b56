"""The history's writer: a bounded in-memory queue that one daemon thread empties into the database in batches.

The request path only appends to a deque (no lock, no wait); whatever goes wrong later is the thread's problem.
A full queue drops the newest event; a database that keeps failing past `WRITE_ATTEMPTS` drops the batch. Both are
counted, and the first drop after a good write logs one WARNING, so an outage logs once, not once per event.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from sqlalchemy import Engine

from fastapi_gcp_tasks.history._errors import MIGRATE_HINT, is_missing_table
from fastapi_gcp_tasks.history._sql import prune_batch, write_batch
from fastapi_gcp_tasks.history._types import AttemptEvent, CreatedEvent, HistoryStats
from fastapi_gcp_tasks.outbox._schema import db_now

__all__ = ["WRITE_ATTEMPTS", "Deferred", "HistoryWriter"]

logger = logging.getLogger("fastapi_gcp_tasks.history")

WRITE_ATTEMPTS = 3
"""Transactions tried per batch before it is dropped: a lost connection or a deadlock costs one retry."""
BACKOFF = 0.2
"""Seconds before the first retry of a batch, doubled for each next one."""
PRUNE_BATCH = 1000

Event = CreatedEvent | AttemptEvent


class Deferred(NamedTuple):
    """An event the writer thread builds itself (`build()`; None: nothing to record), off the request path."""

    build: Callable[[], Event | None]


Queued = Event | Deferred


class HistoryWriter:
    """Batches events into `engine` from a daemon thread, started on the first event."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_queue: int,
        batch_size: int,
        flush_interval: float,
        retention: float | None,
        prune_interval: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._max_queue = max_queue
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retention = retention
        self._prune_interval = prune_interval
        self._on_batch = on_batch
        self._queue: collections.deque[Queued] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._done = threading.Condition()
        self._handled = 0
        self._in_flight = 0
        self._recorded = 0
        self._dropped = 0
        self._write_errors = 0
        self._drop_lock = threading.Lock()
        self._warned = False
        self._next_prune = 0.0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # the request path --------------------------------------------------------------------------------------

    def submit(self, event: Queued) -> None:
        """Queue `event`, or drop and count it when the queue is full or the writer closed; never blocks on I/O."""
        if self._closed or len(self._queue) >= self._max_queue:
            self._drop(1, "the history queue is full" if not self._closed else "the history is closed")
            return
        if self._thread is None:
            try:
                self._start()
            except RuntimeError as exc:  # no new thread at interpreter shutdown: recording must not raise
                self._drop(1, f"the writer thread could not start: {exc}")
                return
        self._queue.append(event)

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="fastapi-gcp-tasks-history", daemon=True)
                thread.start()
                self._thread = thread

    def _drop(self, count: int, why: str) -> None:
        with self._drop_lock:
            self._dropped += count
            warn, self._warned = not self._warned, True
        if warn:
            logger.warning("task history dropped %d event(s): %s (counted in stats.dropped)", count, why)

    # control -----------------------------------------------------------------------------------------------

    @property
    def stats(self) -> HistoryStats:
        return HistoryStats(
            recorded=self._recorded, dropped=self._dropped, write_errors=self._write_errors, queued=len(self._queue)
        )

    def flush(self, timeout: float) -> bool:
        """Wait until every event queued before the call is written (or dropped); False on timeout."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._done:
            target = self._handled + self._in_flight + len(self._queue)
            while self._handled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return self._handled >= target
                self._done.wait(min(remaining, 0.05))
                self._wake.set()
        return True

    def close(self, timeout: float) -> bool:
        """Flush for up to `timeout` seconds, then stop the thread; whether everything queued was handled."""
        self._closed = True
        flushed = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return flushed

    def finish(self) -> None:
        """Let the thread write what is queued, then end, without waiting for it (the history was collected)."""
        self._closed = True
        self._wake.set()

    # the thread --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            while self._queue and not (self._stop.is_set() and self._closed and self._abandon()):
                self._write(self._take())
            if self._stop.is_set() or self._closed:
                return
            self._maybe_prune()

    def _abandon(self) -> bool:
        """After `close()` gave up waiting: count what is left as dropped."""
        left = 0
        with self._done:
            while self._queue:
                self._queue.popleft()
                left += 1
        if left:
            self._drop(left, "the history was closed before it could write them")
            self._mark_handled(left, in_flight=False)
        return True

    def _take(self) -> list[Queued]:
        batch: list[Queued] = []
        with self._done:  # so that `flush` counts every event exactly once: queued, in flight or handled
            while self._queue and len(batch) < self._batch_size:
                batch.append(self._queue.popleft())
            self._in_flight = len(batch)
        return batch

    def _mark_handled(self, count: int, *, in_flight: bool = True) -> None:
        with self._done:
            self._handled += count
            if in_flight:
                self._in_flight = 0
            self._done.notify_all()

    def _built(self, batch: Sequence[Queued]) -> list[Event]:
        """The batch's events, deferred ones built here; a build that fails is logged and dropped."""
        events: list[Event] = []
        failed = 0
        for item in batch:
            if isinstance(item, Deferred):
                try:
                    event = item.build()
                except Exception:
                    logger.exception("could not build a task history event; it is dropped")
                    failed += 1
                    continue
                finally:
                    time.sleep(0)  # between events, let a thread serving requests take the GIL
                if event is None:
                    continue
                item = event
            events.append(item)
        if failed:
            self._drop(failed, "building the event failed (logged above)")
        return events

    def _write(self, batch: Sequence[Queued]) -> None:
        events = self._built(batch)
        if events:
            self._store(events)
        self._mark_handled(len(batch))

    def _store(self, events: Sequence[Event]) -> None:
        """Write `events` in one transaction, tried `WRITE_ATTEMPTS` times, then dropped and counted."""
        delay = BACKOFF
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._engine.begin() as connection:
                    write_batch(connection, events)
            except Exception as exc:  # noqa: BLE001 - any failure of the database is counted, retried, then dropped
                self._write_errors += 1
                if attempt == WRITE_ATTEMPTS or self._stop.wait(delay):
                    hint = f" ({MIGRATE_HINT})" if is_missing_table(exc) else ""
                    why = f"the database failed {attempt} time(s): {type(exc).__name__}: {exc}{hint}"
                    self._drop(len(events), why)
                    break
                delay *= 2
            else:
                self._recorded += len(events)
                with self._drop_lock:
                    self._warned = False
                if self._on_batch is not None:
                    self._on_batch(len(events))
                break

    def _maybe_prune(self) -> None:
        if self._retention is None or self._recorded == 0 or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self._prune_interval
        try:
            prune(self._engine, db_now(-self._retention), stop=self._stop)
        except Exception as exc:  # noqa: BLE001 - pruning is retried at the next interval; recording goes on
            self._write_errors += 1
            logger.warning("task history pruning failed: %s: %s", type(exc).__name__, exc)


def prune(engine: Engine, cutoff: object, *, stop: threading.Event | None = None) -> int:
    """Delete what was last written before `cutoff`, one short transaction per batch; the rows deleted."""
    total = 0
    while stop is None or not stop.is_set():
        with engine.begin() as connection:
            deleted = prune_batch(connection, cutoff, PRUNE_BATCH)  # type: ignore[arg-type]
        total += deleted
        if deleted == 0:
            break
    return total
