"""Lenient parsing of the headers Cloud Tasks and Cloud Scheduler put on a delivery.

A header the worker cannot parse must never turn into a 422: Cloud Tasks would retry the task until
its attempts run out, although nothing about the task is wrong. Every parser here answers `None`
for a missing, empty or malformed value instead of raising.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping

QUEUE_NAME = "x-cloudtasks-queuename"
TASK_NAME = "x-cloudtasks-taskname"
RETRY_COUNT = "x-cloudtasks-taskretrycount"
EXECUTION_COUNT = "x-cloudtasks-taskexecutioncount"
TASK_ETA = "x-cloudtasks-tasketa"
PREVIOUS_RESPONSE = "x-cloudtasks-taskpreviousresponse"
RETRY_REASON = "x-cloudtasks-taskretryreason"
SCHEDULER = "x-cloudscheduler"
SCHEDULER_JOB_NAME = "x-cloudscheduler-jobname"
SCHEDULER_SCHEDULE_TIME = "x-cloudscheduler-scheduletime"

REDACTED = "[redacted]"
"""What a dead letter keeps of a header that carries a credential."""

# A header carries a credential when its lower-cased name contains one of these words: `Authorization` and its
# proxied forms (`X-Forwarded-Authorization`, `X-Serverless-Authorization`), IAP's `X-Goog-IAP-JWT-Assertion`,
# webhook signatures, API keys, cookies and session ids.
_SECRET_WORDS = (
    "authorization",
    "cookie",
    "token",
    "assertion",
    "signature",
    "secret",
    "password",
    "api-key",
    "apikey",
    "credential",
    "session",
)

_EXCESS_FRACTION = re.compile(r"(\.\d{6})\d+")


def text(value: str | int | None) -> str | None:
    """A header's text, or None when it is missing or blank."""
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def integer(value: str | int | None) -> int | None:
    """A non-negative integer header, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if value >= 0 else None
    raw = text(value)
    if raw is None:
        return None
    try:
        number = int(raw)
    except ValueError:
        return None
    return number if number >= 0 else None


def epoch_seconds(value: str | int | float | None) -> dt.datetime | None:
    """`X-CloudTasks-TaskETA` (seconds since the epoch, fractional) as a tz-aware UTC datetime, or None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raw = text(value)
        if raw is None:
            return None
        try:
            seconds = float(raw)
        except ValueError:
            return None
    if not math.isfinite(seconds):
        return None
    try:
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def rfc3339(value: str | None) -> dt.datetime | None:
    """`X-CloudScheduler-ScheduleTime` (RFC 3339) as a tz-aware UTC datetime, or None.

    Google writes up to nine fractional digits; Python keeps six, so the rest is dropped. A value
    without an offset is taken as UTC, which is what the scheduler sends.
    """
    raw = text(value)
    if raw is None:
        return None
    raw = _EXCESS_FRACTION.sub(r"\1", raw)
    try:
        parsed = dt.datetime.fromisoformat(raw)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves year 1 or 9999 out of range
        return None


def flag(value: str | None) -> bool:
    """`X-CloudScheduler: true`."""
    raw = text(value)
    return raw is not None and raw.lower() == "true"


def is_secret(name: str) -> bool:
    """Whether the header `name` may carry a credential (a token, a signature, a key, a cookie)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def safe_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers, lower-cased, with the value of every credential replaced by `REDACTED`."""
    return {name.lower(): REDACTED if is_secret(name) else value for name, value in headers.items()}
