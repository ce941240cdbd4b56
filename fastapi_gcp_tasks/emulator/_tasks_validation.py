"""Cloud Tasks request checks for the emulator: names, queue settings, HTTP requests, task limits, paging.

Pure functions over the raw protobuf messages, raising `RpcError` (INVALID_ARGUMENT) with the reason the
real service would give. The HTTP-request rules shared with Cloud Scheduler live in `_rpc.py`; Google's
limits in `fastapi_gcp_tasks._limits`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from typing import Any

from fastapi_gcp_tasks._limits import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_CONCURRENT_DISPATCHES,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MIN_BACKOFF,
    ID_PATTERN,
    LIST_TASKS_PAGE_SIZE,
    MAX_BURST_SIZE,
    MAX_CONCURRENT_DISPATCHES,
    MAX_DISPATCHES_PER_SECOND,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_BYTES,
    QUEUE_ID_PATTERN,
)
from fastapi_gcp_tasks.emulator._rpc import check_deadline, check_http_target, duration, invalid, seconds

__all__ = [
    "LOCATION_RE",
    "PAUSED",
    "QUEUE_FORMAT",
    "QUEUE_RE",
    "RUNNING",
    "TASK_ID_RE",
    "UPDATABLE_PATHS",
    "check_http_request",
    "check_queue_config",
    "check_task",
    "fill_queue_defaults",
    "page",
    "set_time",
    "to_datetime",
]

RUNNING, PAUSED = 1, 2
"""`Queue.State` values."""

LOCATION_RE = re.compile(r"projects/([A-Za-z0-9.:_-]{1,100})/locations/([A-Za-z0-9-]{1,63})")
QUEUE_RE = re.compile(
    rf"(projects/[A-Za-z0-9.:_-]{{1,100}}/locations/[A-Za-z0-9-]{{1,63}})/queues/({QUEUE_ID_PATTERN.pattern})"
)
TASK_ID_RE = ID_PATTERN
QUEUE_FORMAT = "projects/PROJECT_ID/locations/LOCATION_ID/queues/QUEUE_ID"

UPDATABLE_PATHS = frozenset(
    {
        "rate_limits",
        "rate_limits.max_dispatches_per_second",
        "rate_limits.max_concurrent_dispatches",
        "retry_config",
        "retry_config.max_attempts",
        "retry_config.max_retry_duration",
        "retry_config.min_backoff",
        "retry_config.max_backoff",
        "retry_config.max_doublings",
        "http_target",
        "app_engine_routing_override",
        "stackdriver_logging_config",
        "stackdriver_logging_config.sampling_ratio",
    }
)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_datetime(timestamp: Any) -> dt.datetime:
    """A `google.protobuf.Timestamp` as an aware UTC datetime, truncated to the microsecond (as the API does)."""
    return _EPOCH + dt.timedelta(seconds=timestamp.seconds, microseconds=timestamp.nanos // 1000)


def set_time(target: Any, when: dt.datetime, *, whole_seconds: bool = False) -> None:
    """Set the Timestamp `target` to `when`, truncated to the microsecond (to the second with `whole_seconds`)."""
    micros = (when - _EPOCH) // dt.timedelta(microseconds=1)
    target.seconds, rest = divmod(micros, 1_000_000)
    target.nanos = 0 if whole_seconds else rest * 1000


def check_queue_config(queue: Any) -> None:
    """A queue's `rate_limits`, `retry_config` and logging ratio as given (0 or unset: the default).

    Pure: callers check the whole queue before they store or create anything.
    """
    rate = queue.rate_limits
    if not 0 <= rate.max_dispatches_per_second <= MAX_DISPATCHES_PER_SECOND:
        raise invalid(
            f"rate_limits.max_dispatches_per_second must be between 0 (default) and {MAX_DISPATCHES_PER_SECOND:g},"
            f" got {rate.max_dispatches_per_second}"
        )
    if not 0 <= rate.max_concurrent_dispatches <= MAX_CONCURRENT_DISPATCHES:
        raise invalid(
            f"rate_limits.max_concurrent_dispatches must be between 0 (default) and {MAX_CONCURRENT_DISPATCHES},"
            f" got {rate.max_concurrent_dispatches}"
        )
    retry = queue.retry_config
    if retry.max_attempts < -1:
        raise invalid(f"retry_config.max_attempts must be -1 (unlimited) or more, got {retry.max_attempts}")
    if retry.max_doublings < 0:
        raise invalid(f"retry_config.max_doublings must not be negative, got {retry.max_doublings}")
    for name in ("min_backoff", "max_backoff", "max_retry_duration"):
        if seconds(getattr(retry, name)) < 0:
            raise invalid(f"retry_config.{name} must not be negative")
    # compared as they will be stored: an unset side is its default
    min_backoff = seconds(retry.min_backoff) if retry.HasField("min_backoff") else DEFAULT_MIN_BACKOFF
    max_backoff = seconds(retry.max_backoff) if retry.HasField("max_backoff") else DEFAULT_MAX_BACKOFF
    if min_backoff > max_backoff:
        raise invalid(
            f"retry_config.min_backoff ({min_backoff:g} s) must not be greater than retry_config.max_backoff"
            f" ({max_backoff:g} s{'' if retry.HasField('max_backoff') else ', the default'})"
        )
    ratio = queue.stackdriver_logging_config.sampling_ratio
    if not 0.0 <= ratio <= 1.0:
        raise invalid(f"stackdriver_logging_config.sampling_ratio must be between 0.0 and 1.0, got {ratio}")


def fill_queue_defaults(queue: Any) -> None:
    """Fill the settings left at 0 or unset with the service's defaults, and derive `max_burst_size`."""
    rate = queue.rate_limits
    if rate.max_dispatches_per_second <= 0:
        rate.max_dispatches_per_second = MAX_DISPATCHES_PER_SECOND
    if rate.max_concurrent_dispatches <= 0:
        rate.max_concurrent_dispatches = DEFAULT_MAX_CONCURRENT_DISPATCHES
    rate.max_burst_size = min(MAX_BURST_SIZE, max(1, math.ceil(rate.max_dispatches_per_second)))
    retry = queue.retry_config
    if retry.max_attempts == 0:
        retry.max_attempts = DEFAULT_MAX_ATTEMPTS
    if not retry.HasField("min_backoff"):
        retry.min_backoff.CopyFrom(duration(DEFAULT_MIN_BACKOFF))
    if not retry.HasField("max_backoff"):
        retry.max_backoff.CopyFrom(duration(DEFAULT_MAX_BACKOFF))
    if retry.max_doublings == 0:  # proto3 cannot tell 0 from unset: the service reads it as "unspecified"
        retry.max_doublings = DEFAULT_MAX_DOUBLINGS
    if not retry.HasField("max_retry_duration"):
        retry.max_retry_duration.CopyFrom(duration(0))
    if queue.state not in (RUNNING, PAUSED):
        queue.state = RUNNING


def check_http_request(http: Any) -> None:
    """A task's `http_request`, under the HTTP-target rules both services share."""
    check_http_target(http, "task.http_request", "url")


def check_task(task: Any, now: dt.datetime) -> dt.datetime:
    """Check a task to create (its target checked already); returns when it is due.

    A `schedule_time` unset or in the past is due `now` (CreateTaskRequest: "If schedule_time is not set or
    is in the past then Cloud Tasks will set it to the current time").
    """
    if task.HasField("schedule_time"):
        try:
            when = to_datetime(task.schedule_time)
        except (OverflowError, ValueError, OSError):
            raise invalid("task.schedule_time is not a valid timestamp") from None
        if when - now > MAX_SCHEDULE_AHEAD:
            raise invalid(
                f"task.schedule_time {when.isoformat()} is more than 30 days ahead of now ({now.isoformat()})"
            )
        if when < now:
            when = now
    else:
        when = now
    if task.HasField("dispatch_deadline"):
        check_deadline(task.dispatch_deadline, "task.dispatch_deadline")
    size = task.ByteSize()
    if size > MAX_TASK_BYTES:
        raise invalid(f"task is {size} bytes, more than the {MAX_TASK_BYTES} bytes (1 MB) a task may have")
    return when


def page(items: list[Any], page_size: int, page_token: str, key: Callable[[Any], Any]) -> tuple[list[Any], str]:
    """One page of `items` (sorted by `key`, an int or a str) after the item whose key is `page_token`."""
    if page_size < 0:
        raise invalid(f"page_size must not be negative, got {page_size}")
    size = min(page_size or LIST_TASKS_PAGE_SIZE, LIST_TASKS_PAGE_SIZE)
    start = 0
    if page_token and items:
        kind = type(key(items[0]))
        try:
            after = kind(page_token)
        except ValueError:
            raise invalid(f"page_token {page_token!r} is not a token this service returned") from None
        start = len(items)
        for index, item in enumerate(items):
            if key(item) > after:
                start = index
                break
    page = items[start : start + size]
    token = str(key(page[-1])) if page and start + size < len(items) else ""
    return page, token
