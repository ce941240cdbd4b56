"""The relay: turns committed outbox rows into Cloud Tasks, at least once, never losing one.

One loop claims batches (a short transaction each, see `_sql.py`) and hands each batch to a worker; at most
`concurrency` batches are in flight. A worker sends its rows outside any transaction, grouped by queue, then
records the outcome in one transaction fenced by the lease token:

* created, or ALREADY_EXISTS (an earlier attempt got through): delivered, the row is deleted (or kept for
  `retention_seconds`);
* a retryable error: the row becomes ready again after an exponential backoff with jitter;
* a permanent error (INVALID_ARGUMENT and the like), an undecodable row, or `max_attempts` reached: the row moves
  to the dead-letter table with the reason.

A relay that dies at any point leaves its rows leased; once the lease expires another relay takes them and sends
them again under the same task names, which Cloud Tasks deduplicates. Database calls run in worker threads
with a blocking driver; the event loop only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.cloud import tasks_v2
from sqlalchemy import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError, SendError, TaskAlreadyExistsError
from fastapi_gcp_tasks.outbox._client import BatchSender
from fastapi_gcp_tasks.outbox._engine import relay_engine
from fastapi_gcp_tasks.outbox._failpoints import failpoint
from fastapi_gcp_tasks.outbox._schema import NOTIFY_CHANNEL
from fastapi_gcp_tasks.outbox._sql import ClaimedRow, OutboxStats, OutboxStore
from fastapi_gcp_tasks.transport._tasks import batches

__all__ = ["Relay", "RelaySettings", "RelayStats"]

logger = logging.getLogger("outbox.relay")


@dataclass(frozen=True, kw_only=True)
class RelaySettings:
    """How one relay process claims, sends, retries and gives up."""

    batch_size: int = 100
    """Rows per claim; `batch_create_tasks` takes 100 per queue and call."""
    concurrency: int = 4
    """Batches in flight at once (each one holds a database connection only while claiming and finishing)."""
    poll_interval: float = 1.0
    """Seconds between claims when idle; with LISTEN/NOTIFY a commit wakes the relay sooner."""
    listen: bool = True
    """On PostgreSQL, wake up on the NOTIFY sent by the outbox's insert trigger."""
    lease_seconds: float = 60.0
    """How long a claim owns its rows; after that another relay may take them."""
    send_timeout: float = 20.0
    """Deadline of each call to Cloud Tasks; must be shorter than the lease."""
    max_attempts: int = 25
    """Attempts before a row with a retryable error is dead-lettered."""
    backoff_initial: float = 1.0
    backoff_max: float = 600.0
    outage_pause_max: float = 10.0
    """After a batch in which every send failed, stop claiming for a backoff delay of at most this long."""
    retention_seconds: float = 0.0
    """Keep delivered rows this long (0: delete them at once)."""
    shutdown_timeout: float = 30.0
    """On stop, wait this long for batches in flight, then give their leases back."""
    stats_interval: float = 10.0
    """Seconds between backlog snapshots (logged and exported as metrics)."""

    def __post_init__(self) -> None:
        for name in ("batch_size", "concurrency", "max_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be at least 1")
        for name in (
            "poll_interval",
            "lease_seconds",
            "send_timeout",
            "backoff_initial",
            "stats_interval",
            "outage_pause_max",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be positive")
        if self.send_timeout >= self.lease_seconds:
            raise ValueError(
                f"send_timeout={self.send_timeout!r} must be shorter than lease_seconds={self.lease_seconds!r}"
            )
        if self.backoff_max < self.backoff_initial or self.retention_seconds < 0 or self.shutdown_timeout < 0:
            raise ValueError("backoff_max must be >= backoff_initial; retention and shutdown timeouts >= 0")

    def backoff(self, attempts: int) -> float:
        """Delay before the next attempt of a row that failed `attempts` times: exponential, half jittered."""
        ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempts - 1, 60))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass
class RelayStats:
    """Counters since the relay started (exported as Prometheus counters)."""

    claimed: int = 0
    delivered: int = 0
    already_existed: int = 0
    """Delivered rows whose task existed already: an earlier attempt got through before a crash or timeout."""
    retried: int = 0
    dead_lettered: int = 0
    lease_lost: int = 0
    """Outcomes not recorded because another relay had taken the rows over."""
    database_errors: int = 0
    last_snapshot: OutboxStats | None = field(default=None, repr=False)


@dataclass
class _Outcome:
    delivered: list[int] = field(default_factory=list)
    already_existed: int = 0
    retries: list[tuple[int, float, str]] = field(default_factory=list)
    dead: list[tuple[int, str]] = field(default_factory=list)


class Relay:
    """Moves committed outbox rows to Cloud Tasks through `client` (a `BatchSender`).

    Run it as a process (`fastapi-gcp-tasks relay`), or inside an application's lifespan:

    ```python
    @contextlib.asynccontextmanager
    async def lifespan(app):
        relay = Relay(DATABASE_URL, CloudTasksRelayClient())
        async with relay.running():
            yield
    ```
    """

    def __init__(
        self,
        database: str | URL | Engine,
        client: BatchSender,
        settings: RelaySettings | None = None,
    ) -> None:
        self.settings = settings or RelaySettings()
        self.engine = (
            database
            if isinstance(database, Engine)
            else relay_engine(database, pool_size=self.settings.concurrency + 2)
        )
        self.store = OutboxStore(self.engine)
        self.client = client
        self.stats = RelayStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop_requested = False
        self._pause_until = 0.0
        self._outage = 0

    def stop(self) -> None:
        """Ask the relay to stop: no new claims; batches in flight finish (see `shutdown_timeout`)."""
        self._stop_requested = True
        self._notify()

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
                loop.call_soon_threadsafe(wake.set)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        """Run the relay in the background for the duration of the block (an application's lifespan)."""
        task = asyncio.create_task(self.run())
        task.add_done_callback(_log_crash)
        try:
            yield self
        finally:
            self.stop()
            await task

    async def run(self, *, until_idle: bool = False) -> RelayStats:
        """Relay until `stop()` (or, with `until_idle`, until no row is ready and nothing is in flight)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pause_until = 0.0
        self._outage = 0
        settings = self.settings
        slots = asyncio.Semaphore(settings.concurrency)
        in_flight: set[asyncio.Task[None]] = set()
        listener = self._start_listener()
        next_snapshot = 0.0
        next_purge = 0.0
        failures = 0
        logger.info("relay started", extra={"event": "relay_started", "settings": repr(settings)})
        try:
            while not self._stop_requested:
                now = time.monotonic()
                if now >= next_snapshot:
                    next_snapshot = now + settings.stats_interval
                    await self._snapshot()
                if settings.retention_seconds and now >= next_purge:
                    next_purge = now + min(60.0, settings.retention_seconds)
                    with contextlib.suppress(SQLAlchemyError):
                        await asyncio.to_thread(self.store.purge_delivered, settings.retention_seconds)
                if now < self._pause_until:
                    if until_idle and not in_flight:
                        break
                    await self._sleep(self._pause_until - now)
                    continue
                await slots.acquire()
                if self._stop_requested:
                    slots.release()
                    break
                self._wake.clear()
                try:
                    token, rows = await asyncio.to_thread(
                        self.store.claim, settings.batch_size, lease_seconds=settings.lease_seconds
                    )
                except SQLAlchemyError as exc:
                    slots.release()
                    failures += 1
                    self.stats.database_errors += 1
                    delay = min(5.0, 0.1 * 2**failures)
                    logger.warning(
                        "claim failed, retrying in %.1fs: %s",
                        delay,
                        exc.__class__.__name__,
                        extra={"event": "claim_failed", "error": str(exc).splitlines()[0]},
                    )
                    await self._sleep(delay)
                    continue
                failures = 0
                if not rows:
                    slots.release()
                    if until_idle and not in_flight:
                        break
                    await self._sleep(settings.poll_interval if not in_flight else 0.05)
                    continue
                failpoint("claimed")
                self.stats.claimed += len(rows)
                task = asyncio.create_task(self._process(token, rows, time.monotonic() + settings.lease_seconds))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: slots.release())
        finally:
            await self._drain(in_flight)
            if listener is not None:
                listener.stop()
                await asyncio.to_thread(listener.join, 2.0)
            self._stop_requested = False  # a stop asked for before the run started was honoured; the next run may go
            logger.info("relay stopped", extra={"event": "relay_stopped", **self._counters()})
        return self.stats

    async def _drain(self, in_flight: set[asyncio.Task[None]]) -> None:
        if not in_flight:
            return
        _, pending = await asyncio.wait(set(in_flight), timeout=self.settings.shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _snapshot(self) -> None:
        try:
            snapshot = await asyncio.to_thread(self.store.stats)
        except SQLAlchemyError:
            return
        self.stats.last_snapshot = snapshot
        logger.info(
            "outbox: %d pending, oldest %.1fs",
            snapshot.pending,
            snapshot.oldest_age_seconds or 0.0,
            extra={"event": "outbox_snapshot", **_snapshot_fields(snapshot), **self._counters()},
        )

    def _counters(self) -> dict[str, int]:
        s = self.stats
        return {
            "delivered": s.delivered,
            "already_existed": s.already_existed,
            "retried": s.retried,
            "dead_lettered": s.dead_lettered,
            "lease_lost": s.lease_lost,
        }

    async def _process(self, token: str, rows: list[ClaimedRow], lease_deadline: float) -> None:
        try:
            outcome = await self._send(rows)
        except asyncio.CancelledError:
            await self._release(token, rows)
            raise
        failpoint("sent")
        await self._finish(token, rows, outcome, lease_deadline)

    async def _send(self, rows: list[ClaimedRow]) -> _Outcome:
        outcome = _Outcome()
        decoded: list[tuple[ClaimedRow, tasks_v2.CreateTaskRequest]] = []
        for row in rows:
            try:
                decoded.append((row, tasks_v2.CreateTaskRequest.deserialize(row.request)))
            except Exception as exc:  # noqa: BLE001  # protobuf raises several unrelated types; the row is recorded
                outcome.dead.append((row.id, f"undecodable request: {exc!r}"))
        chunks = batches(decoded, lambda pair: pair[0].queue_path)
        results = await asyncio.gather(*(self._send_queue(batch) for batch in chunks))
        for batch, answers in zip(chunks, results, strict=True):
            for (row, _), answer in zip(batch, answers, strict=True):
                self._classify(row, answer, outcome)
        return outcome

    async def _send_queue(
        self, batch: Sequence[tuple[ClaimedRow, tasks_v2.CreateTaskRequest]]
    ) -> Sequence[tasks_v2.Task | FastAPIGCPTasksError]:
        requests = [request for _, request in batch]
        try:
            answers = await self.client.send_batch_async(requests, timeout=self.settings.send_timeout)
        except FastAPIGCPTasksError as exc:
            return [exc] * len(requests)
        if len(answers) != len(requests):
            error = SendError(f"the client answered {len(answers)} of {len(requests)} requests", retryable=True)
            return [error] * len(requests)
        return answers

    def _classify(self, row: ClaimedRow, answer: tasks_v2.Task | FastAPIGCPTasksError, outcome: _Outcome) -> None:
        if isinstance(answer, tasks_v2.Task | TaskAlreadyExistsError):
            outcome.delivered.append(row.id)
            outcome.already_existed += isinstance(answer, TaskAlreadyExistsError)
            return
        retryable = isinstance(answer, SendError) and answer.retryable
        if not retryable:
            outcome.dead.append((row.id, f"{type(answer).__name__}: {answer}"))
        elif row.attempts >= self.settings.max_attempts:
            outcome.dead.append((row.id, f"gave up after {row.attempts} attempts: {answer}"))
        else:
            outcome.retries.append((row.id, self.settings.backoff(row.attempts), str(answer)))

    async def _finish(self, token: str, rows: list[ClaimedRow], outcome: _Outcome, lease_deadline: float) -> None:
        settings = self.settings
        attempt = 0
        while True:
            try:
                counts = await asyncio.to_thread(
                    self.store.finish,
                    token,
                    delivered=outcome.delivered,
                    retries=outcome.retries,
                    dead=outcome.dead,
                    retention_seconds=settings.retention_seconds,
                )
                break
            except SQLAlchemyError as exc:
                self.stats.database_errors += 1
                attempt += 1
                delay = min(2.0, 0.1 * 2**attempt)
                if time.monotonic() + delay >= lease_deadline:
                    # The rows stay leased; when the lease ends they are sent again and deduplicated by name.
                    logger.error(
                        "could not record a batch before its lease ended",
                        extra={"event": "finish_abandoned", "rows": len(rows), "error": str(exc).splitlines()[0]},
                    )
                    return
                await asyncio.sleep(delay)
        self._track_outage(outcome)
        self.stats.delivered += counts.delivered
        self.stats.already_existed += min(outcome.already_existed, counts.delivered)
        self.stats.retried += counts.retried
        self.stats.dead_lettered += counts.dead_lettered
        expected = len(outcome.delivered) + len(outcome.retries) + len(outcome.dead)
        recorded = counts.delivered + counts.retried + counts.dead_lettered
        if recorded < expected:
            self.stats.lease_lost += expected - recorded
            logger.warning(
                "lease lost on %d rows: another relay took them over",
                expected - recorded,
                extra={"event": "lease_lost", "rows": expected - recorded},
            )
        for row_id, reason in outcome.dead:
            logger.error("dead-lettered row %d: %s", row_id, reason, extra={"event": "dead_lettered", "row": row_id})

    def _track_outage(self, outcome: _Outcome) -> None:
        # A batch in which every send failed and will be retried looks like Cloud Tasks being unreachable:
        # stop claiming for a while, longer each time, instead of failing row after row.
        if outcome.retries and not outcome.delivered:
            self._outage += 1
            pause = min(self.settings.backoff(self._outage), self.settings.outage_pause_max)
            self._pause_until = max(self._pause_until, time.monotonic() + pause)
            logger.warning(
                "every send of a batch failed; pausing claims for %.1fs",
                pause,
                extra={"event": "send_outage", "pause_seconds": pause, "error": outcome.retries[0][2]},
            )
        elif outcome.delivered:
            self._outage = 0
            self._pause_until = 0.0

    async def _release(self, token: str, rows: list[ClaimedRow]) -> None:
        try:
            await asyncio.to_thread(self.store.release, token, [row.id for row in rows])
        except SQLAlchemyError:
            logger.warning("could not release leases; they expire on their own", extra={"event": "release_failed"})

    def _start_listener(self) -> _Listener | None:
        if not self.settings.listen or self.engine.dialect.name != "postgresql":
            return None
        try:
            import psycopg  # noqa: F401
        except ImportError:
            logger.info("psycopg is not installed: polling only", extra={"event": "listen_unavailable"})
            return None
        listener = _Listener(self.engine.url, self._notify)
        listener.start()
        return listener


def _log_crash(task: asyncio.Task[RelayStats]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the relay stopped on an error", exc_info=task.exception(), extra={"event": "relay_crashed"})


def _snapshot_fields(snapshot: OutboxStats) -> dict[str, Any]:
    return {
        "pending": snapshot.pending,
        "ready": snapshot.ready,
        "retrying": snapshot.retrying,
        "oldest_age_seconds": snapshot.oldest_age_seconds,
        "dead_letters": snapshot.dead_letters,
    }


class _Listener(threading.Thread):
    """LISTENs on the outbox channel with its own connection and wakes the relay; reconnects on failure."""

    def __init__(self, url: URL, on_notify: Callable[[], None]) -> None:
        super().__init__(name="outbox-listen", daemon=True)
        self._conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_notify = on_notify
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        import psycopg

        delay = 0.1
        while not self._stopped.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.1
                    self._on_notify()  # catch up on commits made while not listening
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._on_notify()
            except psycopg.Error as exc:
                logger.warning("LISTEN connection lost: %s", exc, extra={"event": "listen_failed"})
                self._stopped.wait(delay)
                delay = min(5.0, delay * 2)
