"""Cloud Tasks request checks for the emulator: names, queue settings, HTTP requests, task limits, paging.

Pure functions over the raw protobuf messages, raising `RpcError` (INVALID_ARGUMENT) with the reason the
real service would give. The HTTP-request rules shared with Cloud Scheduler live in `_rpc.py`; Google's
limits in `fastapi_gcp_tasks._limits`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from fastapi_gcp_tasks._limits import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_CONCURRENT_DISPATCHES,
    DEFAULT_MAX_DOUBLINGS,
    DEFAULT_MIN_BACKOFF,
    ID_PATTERN,
    MAX_BURST_SIZE,
    MAX_CONCURRENT_DISPATCHES,
    MAX_DISPATCHES_PER_SECOND,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_BYTES,
    MAX_URL_LENGTH,
    QUEUE_ID_PATTERN,
)
from fastapi_gcp_tasks.emulator._http_pool import target_of
from fastapi_gcp_tasks.emulator._rpc import check_deadline, check_http_target, duration, invalid, seconds

__all__ = [
    "LIST_QUEUES_PAGE_SIZE",
    "LIST_TASKS_PAGE_BYTES",
    "LOCATION_RE",
    "PAGE_TOKEN_LIFETIME",
    "PAUSED",
    "QUEUE_FORMAT",
    "QUEUE_RE",
    "RUNNING",
    "TASK_ID_RE",
    "UPDATABLE_PATHS",
    "PageTokens",
    "check_http_request",
    "check_queue_config",
    "check_task",
    "fill_queue_defaults",
    "page",
    "set_time",
    "stored_url",
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
    for name in ("min_backoff", "max_backoff", "max_retry_duration"):
        # RetryConfig: each "will be truncated to the nearest second"; the 0.1 s default min_backoff shows that
        # sub-second values survive, so only the fraction of a value of 1 s or more is dropped
        value = getattr(retry, name)
        if value.seconds >= 1:
            value.nanos = 0
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


def stored_url(url: str) -> str:
    """`url` as the service stores it: percent-encoded where delivery encodes it, at most 2,083 characters after.

    HttpRequest.url: "Cloud Tasks will encode some characters for safety and compatibility. The maximum allowed
    URL length is 2083 characters after encoding." The encoding is the delivery's own (`_http_pool.target_of`:
    UTF-8 `%XX` escapes in the path and query, IDNA hosts), so what GetTask shows is what the worker receives.
    A URL that needs no encoding is kept exactly as given.
    """
    if _NEEDS_ENCODING.search(url) is None:
        return url
    parts = urlsplit(url)
    try:
        target = target_of(url)
    except ValueError as exc:
        raise invalid(f"task.http_request.url {url!r} cannot be encoded: {exc}") from None
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, _ = netloc.rpartition("@")
        netloc = userinfo + at + target.host_header.decode("ascii")
    path, _, query = target.request_target.decode("ascii").partition("?")
    if not parts.path:
        path = ""
    encoded = urlunsplit((parts.scheme, netloc, path, query, quote(parts.fragment, safe=_FRAGMENT_SAFE)))
    if len(encoded) > MAX_URL_LENGTH:
        raise invalid(
            f"task.http_request.url is {len(encoded)} characters long once percent-encoded;"
            f" at most {MAX_URL_LENGTH} are allowed"
        )
    return encoded


_NEEDS_ENCODING = re.compile(r"[^A-Za-z0-9._~:/?#@!$&'()*+,;=%-]|%(?![0-9A-Fa-f]{2})")
"""A character delivery would percent-encode (outside RFC 3986's unreserved and sub-delims, `[` and `]` included as
they are only allowed around an IPv6 host), or a `%` that starts no escape."""
_FRAGMENT_SAFE = "/?!$&'()*+,;=:@-._~%"


# -- paging --------------------------------------------------------------------------------------------------------

LIST_QUEUES_PAGE_SIZE = 9800
"""ListQueuesRequest.page_size: "The maximum page size is 9800. If unspecified, the page size will be the maximum."."""
LIST_TASKS_PAGE_BYTES = 4 * 1024 * 1024 - 64 * 1024
"""The most a ListTasks page holds, in serialized bytes: under gRPC's default 4 MiB receive limit, so that a FULL
view of large tasks stays readable by any client ("Fewer tasks than requested might be returned, even if more
tasks exist"). A page always holds at least one task."""
PAGE_TOKEN_LIFETIME = dt.timedelta(hours=2)
"""ListQueues / ListTasks: "The page token is valid for only 2 hours"."""


class PageTokens:
    """Opaque, tamper-evident page tokens, bound to the request they continue and valid for a while.

    A token carries the key of the last item of its page, the request it was issued for (parent, filter,
    view: whatever the caller binds) and when it was issued, signed with a key of this service instance.
    Reading it back with another binding, after `lifetime`, or tampered with is INVALID_ARGUMENT, as the
    APIs answer for a token they did not issue for that request.
    """

    def __init__(self, *, lifetime: dt.timedelta | None) -> None:
        """Tokens expire `lifetime` after they were issued (never when None), on the caller's clock."""
        self.lifetime = lifetime
        self._key = secrets.token_bytes(16)

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.blake2s).digest()[:12]

    def issue(self, binding: str, last: int | str, now: dt.datetime) -> str:
        """A token for the page after the item whose key is `last`."""
        payload = json.dumps([binding, now.timestamp(), last], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(self._sign(payload) + payload).decode("ascii").rstrip("=")

    def read(self, token: str, binding: str, now: dt.datetime) -> int | str:
        """The key of the last item of the page before, from a token this instance issued for `binding`."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            signature, payload = raw[:12], raw[12:]
            valid = hmac.compare_digest(signature, self._sign(payload))
            bound, issued, last = json.loads(payload) if valid else (None, 0, None)
        except (binascii.Error, ValueError, TypeError, UnicodeError):
            valid, bound, issued, last = False, None, 0, None
        if not valid or not isinstance(last, int | str) or not isinstance(issued, int | float):
            raise invalid(f"page_token {token[:40]!r} is not a page token this service issued")
        if bound != binding:
            raise invalid("page_token was issued for another parent, filter or view: keep them while paging")
        if self.lifetime is not None and now.timestamp() - issued > self.lifetime.total_seconds():
            raise invalid(f"page_token has expired: page tokens are valid for {self.lifetime.total_seconds():g} s")
        return last


def page(
    items: list[Any],
    page_size: int,
    after: int | str | None,
    key: Callable[[Any], Any],
    *,
    max_size: int,
    max_bytes: int | None = None,
    size_of: Callable[[Any], int] | None = None,
) -> tuple[list[Any], bool]:
    """One page of `items` (sorted by `key`) after the item whose key is `after`; and whether more follow.

    `page_size` 0 means `max_size`, and more is capped to it; with `max_bytes`, the page also stops before
    the item (as measured by `size_of`) that would take it over that many bytes, holding at least one item.
    """
    if page_size < 0:
        raise invalid(f"page_size must not be negative, got {page_size}")
    size = min(page_size or max_size, max_size)
    start = 0
    if after is not None:
        start = len(items)
        for index, item in enumerate(items):
            if key(item) > after:
                start = index
                break
    chosen = items[start : start + size]
    if max_bytes is not None and size_of is not None:
        total = 0
        for count, item in enumerate(chosen):
            total += size_of(item)
            if total > max_bytes and count:
                chosen = chosen[:count]
                break
    return chosen, start + len(chosen) < len(items)
