"""Contracts shared by the emulator's Cloud Tasks and Cloud Scheduler services.

Both services run on one asyncio event loop, share one clock and deliver over one `Deliverer`
(real HTTP with pooled connections, or straight into an ASGI app in tests).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Self

RESPONSE_EXCERPT_BYTES = 1024
"""How much of a worker's response body a delivery keeps (`DeliveryResult.excerpt`); the rest is read and dropped."""


class Clock(Protocol):
    """Time as the emulator sees it. `ManualClock` lets tests move time instead of sleeping."""

    def now(self) -> dt.datetime:
        """The current time, tz-aware UTC."""
        ...

    async def sleep_until(self, when: dt.datetime) -> None:
        """Return once `now() >= when`, or earlier if `wake()` is called (callers re-check)."""
        ...

    def wake(self) -> None:
        """Wake every `sleep_until` early, for example when new work arrives."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One HTTP attempt to make on behalf of a task or a job."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    deadline: float
    """Seconds to wait for the response before the attempt counts as failed."""
    source: str = ""
    """The task or job name, for logs and the inspection API."""
    attempt: int = 1
    """1 for the first attempt of this task or job run, then 2, 3, ... (logs and inspection only)."""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What came back from one attempt. `status` is None when no response arrived."""

    status: int | None
    latency: float
    headers: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    timed_out: bool = False
    """No response came before the attempt's deadline (Cloud Tasks and Scheduler record DEADLINE_EXCEEDED)."""
    excerpt: bytes = b""
    """The first `RESPONSE_EXCERPT_BYTES` of the response body, for the console and the inspection API."""

    @classmethod
    def deadline_passed(cls, request: DeliveryRequest, latency: float) -> DeliveryResult:
        """The result of an attempt that got no response within `request.deadline`."""
        return cls(None, latency, error=f"no response within the {request.deadline:g} s deadline", timed_out=True)

    @property
    def ok(self) -> bool:
        """Any 2xx acknowledges, as on Cloud Tasks and Cloud Scheduler."""
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One attempt as the emulator's inspection API reports it (`Emulator.deliveries`)."""

    source: str
    """The task or job name."""
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    status: int | None
    """The HTTP status, or None when no response arrived (see `error`)."""
    attempt: int
    latency: float
    """Seconds from sending the request to the end of the response."""
    time: dt.datetime
    """When the attempt started, on the emulator's clock."""
    error: str | None = None
    response_excerpt: bytes = b""
    """The start of the response body (`RESPONSE_EXCERPT_BYTES` at most)."""
    gave_up: bool = False
    """The 2xx was a `max_retries` acknowledgement: the worker gave the task up without running it."""

    @classmethod
    def of(
        cls,
        request: DeliveryRequest,
        result: DeliveryResult,
        when: dt.datetime,
        *,
        body_limit: int | None = None,
        gave_up: bool = False,
        **extra: Any,
    ) -> Self:
        """The record of `request`, started at `when`, that ended with `result` (`extra`: a subclass's fields).

        `body_limit` keeps only the start of the request body, so that a long-running emulator that keeps
        records holds a bounded amount of memory whatever its tasks weigh.
        """
        return cls(
            source=request.source,
            method=request.method,
            url=request.url,
            headers=request.headers,
            body=request.body if body_limit is None else request.body[:body_limit],
            status=result.status,
            attempt=request.attempt,
            latency=result.latency,
            time=when,
            error=result.error,
            response_excerpt=result.excerpt,
            gave_up=gave_up,
            **extra,
        )

    @property
    def ok(self) -> bool:
        """Whether the attempt was acknowledged (any 2xx)."""
        return self.status is not None and 200 <= self.status < 300


class Deliverer(Protocol):
    """Makes HTTP attempts; implementations: pooled httpx over sockets, or in-process ASGI."""

    async def deliver(self, request: DeliveryRequest) -> DeliveryResult:
        """Make one attempt, never raising: failures are reported in the result."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
