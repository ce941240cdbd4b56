"""How the emulator makes HTTP attempts: over kept-alive connections, or straight into an ASGI app.

Every deliverer honours the attempt's deadline itself and never raises: a refused connection, a timeout
or a crashing app all come back as a `DeliveryResult` without a status, so the services only have to
look at results. `RecordingDeliverer` wraps either one to keep the inspection records and write the log.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import httpx

from fastapi_gcp_tasks.emulator._clock import SystemClock, call_at
from fastapi_gcp_tasks.emulator._http11 import HTTPClient, ProtocolError
from fastapi_gcp_tasks.emulator._types import (
    Clock,
    Deliverer,
    DeliveryRecord,
    DeliveryRequest,
    DeliveryResult,
)

__all__ = ["AsyncASGIDeliverer", "HttpDeliverer", "RecordingDeliverer", "deliver_on_clock", "logger"]

logger = logging.getLogger("fastapi_gcp_tasks.emulator")

_NO_HEADERS: Mapping[str, str] = {}


class AsyncASGIDeliverer:
    """Delivers straight into an ASGI application, without sockets (tests, in-process development).

    Requests go through `httpx.ASGITransport`; an exception escaping the app becomes a 500, as a
    server would answer.
    """

    def __init__(self, app: Any) -> None:
        """`app` is any ASGI application, for example a `FastAPI` instance."""
        self.app = app
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Make one attempt within `request.deadline` seconds; never raises."""
        client = self._client
        if client is None:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            client = self._client = httpx.AsyncClient(transport=transport, timeout=None, follow_redirects=False)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(request.deadline):
                response = await client.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    content=request.body or None,
                )
        except TimeoutError:
            return DeliveryResult.deadline_passed(request, time.perf_counter() - started)
        except httpx.HTTPError as exc:
            return DeliveryResult(None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a broken target must never break the emulator; it is reported
            return DeliveryResult(None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        headers = response.headers
        retry_after = headers.get("retry-after")
        return DeliveryResult(
            response.status_code,
            time.perf_counter() - started,
            headers={"retry-after": retry_after} if retry_after is not None else _NO_HEADERS,
        )

    async def aclose(self) -> None:
        """Close the client."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


class HttpDeliverer:
    """Delivers over real HTTP/1.1, keeping connections alive between attempts (one pool for every target).

    It uses the emulator's own small client (`_http11.py`) rather than httpx: at delivery rates a
    general-purpose client costs more CPU per request than the worker it calls.
    """

    def __init__(self) -> None:
        self._client: HTTPClient | None = None

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Make one attempt within `request.deadline` seconds; never raises."""
        client = self._client
        if client is None:
            client = self._client = HTTPClient()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(request.deadline):
                response = await client.request(request.method, request.url, request.headers, request.body)
        except TimeoutError:
            return DeliveryResult.deadline_passed(request, time.perf_counter() - started)
        except (OSError, ProtocolError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return DeliveryResult(None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a broken target must never break the emulator; it is reported
            return DeliveryResult(None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        return DeliveryResult(
            response.status,
            time.perf_counter() - started,
            headers={"retry-after": response.retry_after} if response.retry_after is not None else _NO_HEADERS,
        )

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


class RecordingDeliverer:
    """Wraps a deliverer: logs every attempt and keeps the latest ones for `Emulator.deliveries`.

    With a clock other than `SystemClock` (a `ManualClock` in tests), the attempt's deadline is also
    measured on that clock, so moving the clock past it times out a hanging worker without waiting.
    """

    def __init__(self, inner: Deliverer, clock: Clock, *, keep: int | None = 10_000) -> None:
        """Keep the last `keep` records (all of them when None)."""
        self.inner = inner
        self.clock = clock
        self._records: collections.deque[DeliveryRecord] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()

    @property
    def records(self) -> list[DeliveryRecord]:
        """A snapshot of the kept records, oldest first (safe to read from any thread)."""
        with self._lock:
            return list(self._records)

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Make the attempt through the wrapped deliverer, then record and log it."""
        when = self.clock.now()
        result = await deliver_on_clock(self.inner, request, self.clock, when)
        record = DeliveryRecord.of(request, result, when)
        with self._lock:
            self._records.append(record)
        level = logging.INFO if result.ok else logging.WARNING
        if logger.isEnabledFor(level):
            outcome = str(result.status) if result.status is not None else f"no response ({result.error})"
            logger.log(
                level,
                "%s %s -> %s in %.1f ms (attempt %d) %s",
                request.method,
                request.url,
                outcome,
                result.latency * 1000,
                request.attempt,
                request.source,
            )
        return result

    async def aclose(self) -> None:
        """Close the wrapped deliverer."""
        await self.inner.aclose()

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self._records.clear()


async def deliver_on_clock(
    deliverer: Deliverer, request: DeliveryRequest, clock: Clock, started: dt.datetime | None = None
) -> DeliveryResult:
    """Make one attempt within `request.deadline`, measured on `clock` from `started`; never raises.

    The one place the attempt deadline is kept (Cloud Tasks' `dispatch_deadline`, Cloud Scheduler's
    `attempt_deadline`). On the `SystemClock` the deliverers keep it themselves; on another clock (a
    `ManualClock` in tests) moving the clock past it times out a hanging worker without waiting. A
    `RecordingDeliverer` on the same clock keeps it already, and a deliverer that raises becomes a
    result without a status.
    """
    if isinstance(deliverer, RecordingDeliverer) and deliverer.clock is clock:
        return await deliverer.deliver(request)
    try:
        if isinstance(clock, SystemClock):
            return await deliverer.deliver(request)
        return await _race_clock(deliverer, request, clock, clock.now() if started is None else started)
    except Exception as exc:
        logger.exception("emulator: the deliverer raised for %s", request.source)
        return DeliveryResult(None, 0.0, error=f"deliverer failed: {type(exc).__name__}: {exc}")


async def _race_clock(
    deliverer: Deliverer, request: DeliveryRequest, clock: Clock, when: dt.datetime
) -> DeliveryResult:
    started = time.perf_counter()
    attempt = asyncio.ensure_future(deliverer.deliver(request))
    expired: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def expire() -> None:
        if not expired.done():
            expired.set_result(None)

    timer = call_at(clock, when + dt.timedelta(seconds=request.deadline), expire)
    try:
        waiting: set[asyncio.Future[Any]] = {attempt, expired}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await attempt
    if not attempt.cancelled():
        return attempt.result()
    return DeliveryResult.deadline_passed(request, time.perf_counter() - started)
