"""The relay: turns committed outbox rows into Cloud Tasks, at least once, never losing one.

One loop claims batches (a short transaction each, see `_sql.py`) and hands each batch to a worker; at most
`concurrency` batches are in flight. A worker sends its rows outside any transaction, grouped by queue, then
records the outcome in one transaction fenced by the lease token:

* created, or ALREADY_EXISTS (an earlier attempt got through): delivered, the row is deleted (or kept for
  `retention_seconds`);
* a retryable error: the row becomes ready again after an exponential backoff with jitter;
* a permanent error (INVALID_ARGUMENT and the like), an undecodable row, or `max_attempts` reached: the row moves
  to the dead-letter table with the reason.

When every send of a batch fails with a retryable error, Cloud Tasks looks unreachable: the relay stops claiming for
a backoff delay, then sends one small probe batch at a time until a send gets through.

A relay that dies at any point leaves its rows leased; once the lease expires another relay takes them and sends
them again under the same task names, which Cloud Tasks deduplicates. Database calls run in worker threads
with a blocking driver; the event loop only waits.

Operation: whatever a client raises (a missing credential, a custom client's bug) is recorded like a retryable
error, so no batch is ever left unrecorded; every send is cut off before its lease ends, so a hanging Cloud Tasks
never lets another relay claim rows still being sent; an outage pause sleeps (NOTIFYs do not wake it).
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

from google.auth.exceptions import DefaultCredentialsError
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

__all__ = ["Relay", "RelayDatabaseError", "RelaySettings", "RelayStats"]

logger = logging.getLogger("outbox.relay")

PROBE_ROWS = 10
"""Rows claimed at a time while Cloud Tasks looks unreachable (after a batch in which every send failed)."""


class RelayDatabaseError(FastAPIGCPTasksError):
    """`Relay.run(max_database_failures=N)` gave up: N claims in a row failed (a wrong URL, a database down).

    The SQLAlchemy error of the last attempt is the `__cause__`.
    """


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
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._pause_until = 0.0
        self._outage = 0
        self._reported_failures: set[str] = set()
        """Client failures already logged at length: each kind is explained once, then counted."""
        self._missing_queues: set[str] = set()
        """Queues whose NOT_FOUND was logged (again after the queue has delivered)."""
        self._last_summary: tuple[Any, ...] | None = None

    def stop(self) -> None:
        """Ask the relay to stop: no new claims; batches in flight finish (see `shutdown_timeout`)."""
        self._stop_requested = True
        self._notify()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        # A wake-up already pending covers this one (the claim it causes runs after the notifying commit), and
        # not waking the loop again keeps a burst of commits during a pause cheap.
        if loop is not None and wake is not None and not wake.is_set():
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

    async def run(self, *, until_idle: bool = False, max_database_failures: int | None = None) -> RelayStats:
        """Relay until `stop()` (or, with `until_idle`, until no row is ready and nothing is in flight).

        `max_database_failures`: after this many failed claims in a row (about 0.2 s, then up to 5 s apart),
        raise `RelayDatabaseError` instead of retrying forever, so that a wrong database URL ends a relay process
        (None: keep retrying, for a relay inside an application that should survive a database restart).
        """
        if max_database_failures is not None and max_database_failures < 1:
            raise ValueError(f"max_database_failures={max_database_failures!r} must be at least 1 (or None)")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
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
                    # Only stop() ends an outage pause early: commits keep notifying during an outage, and
                    # waking on each of them would spin the loop (LISTEN made the relay busy-wait before).
                    await self._sleep(min(self._pause_until - now, settings.stats_interval), wake_on_notify=False)
                    continue
                probing = self._outage > 0
                if probing and in_flight:
                    # In an outage one small batch at a time probes the service: the backlog keeps its attempts
                    # and the relay its CPU until a send gets through.
                    stopping = asyncio.ensure_future(self._stopping.wait())
                    await asyncio.wait(
                        {*in_flight, stopping}, timeout=settings.stats_interval, return_when=asyncio.FIRST_COMPLETED
                    )
                    stopping.cancel()
                    continue
                await slots.acquire()
                if self._stop_requested:
                    slots.release()
                    break
                self._wake.clear()
                # The lease starts when the claim statement runs, after this instant: a deadline taken from it
                # ends no later than the lease does.
                claim_started = time.monotonic()
                try:
                    token, rows = await asyncio.to_thread(
                        self.store.claim,
                        min(settings.batch_size, PROBE_ROWS) if probing else settings.batch_size,
                        lease_seconds=settings.lease_seconds,
                    )
                except SQLAlchemyError as exc:
                    slots.release()
                    failures += 1
                    self.stats.database_errors += 1
                    error = _first_line(exc)
                    if max_database_failures is not None and failures >= max_database_failures:
                        raise RelayDatabaseError(
                            f"{failures} claims in a row failed on {self.engine.url!r}: {error}. Check the database "
                            "URL (--database-url / FASTAPI_GCP_TASKS_DATABASE_URL), that the server is up and "
                            "that `fastapi-gcp-tasks outbox migrate` ran"
                        ) from exc
                    delay = min(5.0, 0.1 * 2**failures)
                    logger.warning(
                        "claim failed, retrying in %.1fs: %s",
                        delay,
                        error,
                        extra={"event": "claim_failed", "error": error, "failures": failures},
                    )
                    await self._sleep(delay, wake_on_notify=False)
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
                task = asyncio.create_task(self._process(token, rows, claim_started + settings.lease_seconds))
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

    async def _sleep(self, seconds: float, *, wake_on_notify: bool = True) -> None:
        """Sleep up to `seconds`; `stop()` always ends the sleep, a NOTIFY (or a finished batch) only if asked."""
        event = self._wake if wake_on_notify else self._stopping
        assert event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)

    async def _snapshot(self) -> None:
        try:
            snapshot = await asyncio.to_thread(self.store.stats)
        except SQLAlchemyError as exc:
            logger.debug("could not read the outbox snapshot: %s", _first_line(exc))
            return
        self.stats.last_snapshot = snapshot
        fields = _snapshot_fields(snapshot)
        counters = self._counters()
        # An idle relay has nothing to say: the summary is logged when the backlog or a counter moved (the age of
        # the oldest row alone does not count; a stuck backlog moves the retry counter).
        summary = tuple(value for key, value in fields.items() if key != "oldest_age_seconds") + tuple(
            counters.values()
        )
        if summary == self._last_summary:
            return
        self._last_summary = summary
        logger.info(
            "outbox: %d pending (%d ready, %d retrying), oldest %.1fs, %d dead letters",
            snapshot.pending,
            snapshot.ready,
            snapshot.retrying,
            snapshot.oldest_age_seconds or 0.0,
            snapshot.dead_letters,
            extra={"event": "outbox_snapshot", **fields, **counters},
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
            outcome = await self._send(rows, lease_deadline - _finish_reserve(self.settings.lease_seconds))
        except asyncio.CancelledError:
            await self._release(token, rows)
            raise
        except Exception as exc:  # a bug here must still leave every row recorded, not leased
            logger.exception("sending a batch failed unexpectedly", extra={"event": "send_crashed"})
            outcome = _Outcome()
            error = SendError(f"relay error: {type(exc).__name__}: {exc}", retryable=True)
            for row in rows:
                self._classify(row, error, outcome)
        failpoint("sent")
        await self._finish(token, rows, outcome, lease_deadline)

    async def _send(self, rows: list[ClaimedRow], send_deadline: float) -> _Outcome:
        outcome = _Outcome()
        decoded: list[tuple[ClaimedRow, tasks_v2.CreateTaskRequest]] = []
        for row in rows:
            try:
                decoded.append((row, tasks_v2.CreateTaskRequest.deserialize(row.request)))
            except Exception as exc:  # noqa: BLE001  # protobuf raises several unrelated types; the row is recorded
                outcome.dead.append((row.id, f"undecodable request: {exc!r}"))
        chunks = batches(decoded, lambda pair: pair[0].queue_path)
        results = await asyncio.gather(*(self._send_queue(batch, send_deadline) for batch in chunks))
        for batch, answers in zip(chunks, results, strict=True):
            for (row, _), answer in zip(batch, answers, strict=True):
                self._classify(row, answer, outcome)
        return outcome

    async def _send_queue(
        self, batch: Sequence[tuple[ClaimedRow, tasks_v2.CreateTaskRequest]], send_deadline: float
    ) -> Sequence[tasks_v2.Task | FastAPIGCPTasksError]:
        """One call to the client; whatever goes wrong becomes an answer for every request, never an exception.

        The call is cut off at `send_deadline`, before the lease ends: `send_timeout` bounds each RPC, but a
        batch may need several (concurrent mode queues them behind `send_concurrency`), and a foreign client may
        not honour it at all. A cut-off task may still have been created; its resend gets ALREADY_EXISTS.
        """
        requests = [request for _, request in batch]
        budget = send_deadline - time.monotonic()
        error: FastAPIGCPTasksError
        try:
            async with asyncio.timeout(max(budget, 0.0)) as deadline:
                answers = await self.client.send_batch_async(requests, timeout=self.settings.send_timeout)
        except FastAPIGCPTasksError as exc:
            return [exc] * len(requests)
        except TimeoutError as exc:
            if not deadline.expired():
                error = self._client_failure(exc)
            else:
                error = SendError(
                    f"no answer from Cloud Tasks within {max(budget, 0.0):.1f}s, the time left before the lease "
                    f"of {self.settings.lease_seconds:g}s ends; retried under the same task name",
                    retryable=True,
                )
                self._report_once(
                    "lease_cutoff",
                    "a send to Cloud Tasks was still unanswered near the end of its lease and was cut off; its rows "
                    "are retried with backoff. Hint: Cloud Tasks hangs or is slow; if it is merely slow, raise "
                    "--lease-seconds or lower --batch-size",
                    None,
                )
            return [error] * len(requests)
        except Exception as exc:  # noqa: BLE001  # any client failure is recorded on the rows, never lost
            return [self._client_failure(exc)] * len(requests)
        if len(answers) != len(requests):
            error = SendError(f"the client answered {len(answers)} of {len(requests)} requests", retryable=True)
            return [error] * len(requests)
        return answers

    def _client_failure(self, exc: Exception) -> SendError:
        """A retryable error standing for an exception that is not one of the library's (explained once)."""
        cause = f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}".strip().rstrip(":")
        if isinstance(exc, DefaultCredentialsError):
            hint = (
                "no Google credentials: run on a service account, set GOOGLE_APPLICATION_CREDENTIALS, run "
                "`gcloud auth application-default login`, or pass --emulator-host for the emulator"
            )
        else:
            hint = (
                "the Cloud Tasks client raised instead of answering; a custom client (BatchSender) should "
                "return a FastAPIGCPTasksError per request rather than raise"
            )
        self._report_once(type(exc).__qualname__, f"the Cloud Tasks client failed: {cause}. Hint: {hint}", exc)
        return SendError(f"client error: {cause[:500]} (hint: {hint})", retryable=True)

    def _report_once(self, kind: str, message: str, exc: BaseException | None) -> None:
        # A broken client fails every batch alike: one explanation with the traceback, then one debug line each.
        if kind in self._reported_failures:
            logger.debug(message, extra={"event": "send_failed", "kind": kind})
            return
        self._reported_failures.add(kind)
        logger.error(
            "%s; the rows are retried with backoff and dead-lettered after --max-attempts",
            message,
            exc_info=exc,
            extra={"event": "send_failed", "kind": kind},
        )

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
        self._log_rows(rows, outcome)

    def _log_rows(self, rows: list[ClaimedRow], outcome: _Outcome) -> None:
        """One DEBUG line per task, and the one warning that says why a queue is missing and what to do."""
        by_id = {row.id: row for row in rows}
        for row_id, _, error in outcome.retries:
            if "NOT_FOUND" in error:
                self._warn_missing_queue(by_id[row_id].queue_path, error)
        for row_id in outcome.delivered:
            self._missing_queues.discard(by_id[row_id].queue_path)
        if not logger.isEnabledFor(logging.DEBUG):
            return
        for row_id in outcome.delivered:
            logger.debug("created %s", by_id[row_id].task_name, extra={"event": "task_created", "row": row_id})
        for row_id, delay, error in outcome.retries:
            logger.debug(
                "retrying %s in %.1fs: %s",
                by_id[row_id].task_name,
                delay,
                error,
                extra={"event": "task_retry", "row": row_id, "attempts": by_id[row_id].attempts},
            )

    def _warn_missing_queue(self, queue_path: str, error: str) -> None:
        if queue_path in self._missing_queues:
            return
        self._missing_queues.add(queue_path)
        logger.warning(
            "queue %s does not exist (NOT_FOUND): its tasks are retried until it does. Create it (`gcloud tasks "
            "queues create`, or `ensure_queue` at deploy time), or let the relay create it: "
            "CloudTasksRelayClient(auto_create_queue=True), the default; the client needs roles/cloudtasks.queueAdmin",
            queue_path,
            extra={"event": "queue_not_found", "queue_path": queue_path, "error": error},
        )

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


def _finish_reserve(lease_seconds: float) -> float:
    """The part of a lease kept for recording the outcome after the send: a quarter, at most 5 s."""
    return min(5.0, lease_seconds / 4)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _snapshot_fields(snapshot: OutboxStats) -> dict[str, Any]:
    return {
        "pending": snapshot.pending,
        "ready": snapshot.ready,
        "retrying": snapshot.retrying,
        "oldest_age_seconds": snapshot.oldest_age_seconds,
        "dead_letters": snapshot.dead_letters,
        "last_error": snapshot.last_error,
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
