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
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urljoin

import httpx

from fastapi_gcp_tasks.emulator._clock import SystemClock, call_at
from fastapi_gcp_tasks.emulator._http_pool import KEPT_HEADERS, Answer, ConnectionPool, target_of
from fastapi_gcp_tasks.emulator._types import (
    RESPONSE_EXCERPT_BYTES,
    Clock,
    Deliverer,
    DeliveryRecord,
    DeliveryRequest,
    DeliveryResult,
)

__all__ = [
    "MAX_REDIRECTS",
    "AsyncASGIDeliverer",
    "HttpDeliverer",
    "RecordingDeliverer",
    "deliver_on_clock",
    "follow_redirects",
    "logger",
    "url_of",
]

logger = logging.getLogger("fastapi_gcp_tasks.emulator")

MAX_REDIRECTS = 10
"""Redirects followed within one attempt; the 3xx after the last is the attempt's answer (a failure)."""
_FOLLOWED = frozenset({301, 302, 303, 307, 308})

_Send = Callable[[str, str, Mapping[str, str], bytes], Awaitable[Answer]]


class AsyncASGIDeliverer:
    """Delivers straight into an ASGI application, without sockets (tests, in-process development).

    Requests go through `httpx.ASGITransport`; an exception escaping the app becomes a 500, as a
    server would answer. Redirects are followed as over HTTP (`follow_redirects`).
    """

    def __init__(self, app: Any) -> None:
        """`app` is any ASGI application, for example a `FastAPI` instance."""
        self.app = app
        self._client: httpx.AsyncClient | None = None

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Make one attempt within `request.deadline` seconds; never raises."""
        return await _attempt(self._send, request)

    async def _send(self, method: str, url: str, headers: Mapping[str, str], body: bytes) -> Answer:
        client = self._client
        if client is None:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            client = self._client = httpx.AsyncClient(transport=transport, timeout=None, follow_redirects=False)
        response = await client.request(method, url_of(url), headers=headers, content=body or None)
        kept = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
        excerpt = response.content[:RESPONSE_EXCERPT_BYTES]
        return Answer(response.status_code, kept, response.headers.get("location"), excerpt)

    async def aclose(self) -> None:
        """Close the client."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


class HttpDeliverer:
    """Delivers over real HTTP/1.1, keeping connections alive between attempts (one pool for every target).

    h11 parses every answer and `_http_pool.ConnectionPool` pools the connections. httpx's own pool cost
    2.3 ms of CPU per request at 48 in flight, far more than the worker spends; aiohttp cost the same as
    this pool, for seven more dependencies (bench/emulator/clients.py). Redirects are followed
    (`follow_redirects`).
    """

    def __init__(self) -> None:
        self._pool: ConnectionPool | None = None

    @property
    def connections_opened(self) -> int:
        """How many connections this deliverer opened so far (keep-alive reuse shows as a small number)."""
        return 0 if self._pool is None else self._pool.opened

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Make one attempt within `request.deadline` seconds; never raises."""
        if self._pool is None:
            self._pool = ConnectionPool()
        return await _attempt(self._pool.request, request)

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.aclose()


async def _attempt(send: _Send, request: DeliveryRequest) -> DeliveryResult:
    """One attempt over `send`, redirects included, within `request.deadline`; never raises."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(request.deadline):
            answer, error = await follow_redirects(send, request)
    except TimeoutError:
        return DeliveryResult.deadline_passed(request, time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a broken target must never break the emulator; it is reported
        return DeliveryResult(None, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    return DeliveryResult(
        answer.status, time.perf_counter() - started, headers=answer.headers, error=error, excerpt=answer.excerpt
    )


async def follow_redirects(send: _Send, request: DeliveryRequest) -> tuple[Answer, str | None]:
    """Send `request`, following redirects as the services do; returns the last answer and why it stopped early.

    Cloud Tasks documents that a 3xx's `Location` may be followed and that the redirect is not a separate
    attempt; Cloud Scheduler that the redirected request's response is the one considered. So 301, 302,
    303, 307 and 308 with a `Location` are followed, at most `MAX_REDIRECTS` hops, all within the one
    attempt's deadline. The method and body change as HTTP clients do (RFC 9110 15.4): 303 turns any
    method but HEAD into a body-less GET, 301 and 302 turn POST into GET, 307 and 308 keep both. The
    Authorization header (the OIDC or OAuth token) is dropped once a hop leaves the origin (scheme, host,
    port) the token was made for.
    """
    method, url, headers, body = request.method, request.url, request.headers, request.body
    for hop in range(MAX_REDIRECTS + 1):
        answer = await send(method, url, headers, body)
        if answer.status not in _FOLLOWED or answer.location is None:
            return answer, None
        if hop == MAX_REDIRECTS:
            return answer, f"stopped after {MAX_REDIRECTS} redirects"
        next_url = urljoin(url, answer.location.strip())
        try:
            next_target = target_of(next_url)
        except ValueError:
            return answer, f"not followed: redirect to {answer.location[:200]!r}"
        if (answer.status == 303 and method != "HEAD") or (answer.status in (301, 302) and method == "POST"):
            method, body = "GET", b""
            headers = {name: value for name, value in headers.items() if not name.lower().startswith("content-")}
        if next_target.origin != target_of(url).origin:
            headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
        url = next_url
    raise AssertionError("unreachable")  # pragma: no cover


def url_of(url: str) -> str:
    """`url` as sent: percent-encoded where the services encode, without its fragment."""
    target = target_of(url)
    return f"{target.scheme}://{target.host_header.decode()}{target.request_target.decode()}"


def _gave_up(result: DeliveryResult) -> str | None:
    """The retry count a `max_retries` acknowledgement carries (`GAVE_UP_HEADER`), or None for a real success."""
    if not result.headers:
        return None
    # Imported only for a response that carries headers: the module loads FastAPI, which the emulator
    # otherwise never needs.
    from fastapi_gcp_tasks.receive._retries import GAVE_UP_HEADER

    return next((value for key, value in result.headers.items() if key.lower() == GAVE_UP_HEADER), None)


class RecordingDeliverer:
    """Wraps a deliverer: logs every attempt and keeps the latest ones for `Emulator.deliveries`.

    With a clock other than `SystemClock` (a `ManualClock` in tests), the attempt's deadline is also
    measured on that clock, so moving the clock past it times out a hanging worker without waiting.
    """

    def __init__(
        self, inner: Deliverer, clock: Clock, *, keep: int | None = 10_000, body_limit: int | None = None
    ) -> None:
        """Keep the last `keep` records (all of them when None), each with at most `body_limit` bytes of its body."""
        self.inner = inner
        self.clock = clock
        self.body_limit = body_limit
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
        gave_up = _gave_up(result) if result.ok else None
        if self._records.maxlen != 0:  # keeping none: no record to build for every delivery
            record = DeliveryRecord.of(request, result, when, body_limit=self.body_limit, gave_up=gave_up is not None)
            with self._lock:
                self._records.append(record)
        level = logging.INFO if result.ok and gave_up is None else logging.WARNING
        if logger.isEnabledFor(level):
            if result.status is None:
                outcome = f"no response ({result.error})"
            elif gave_up is not None:
                outcome = f"{result.status} (acknowledged without running: max_retries gave up after {gave_up} retries)"
            else:
                outcome = str(result.status) if result.error is None else f"{result.status} ({result.error})"
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
