"""What Cloud Scheduler (and, for HTTP targets, Cloud Tasks) refuses: one implementation, pure.

The library refuses a job with these checks when it is declared or built, and the emulator answers
INVALID_ARGUMENT with the same checks, so the two cannot disagree. Every check raises `TaskLimitError`
whose `param` is the field at fault as the service names it (`retry_config.retry_count`,
`http_target.uri`, ...); the emulator turns it into INVALID_ARGUMENT with the same message, the library
into an error naming the job. Google's values come from `fastapi_gcp_tasks._limits`.

`normalise_job` fills the defaults the service stores for unset fields; the checks run on a normalised
job, since the defaults take part in them (an unset `min_backoff_duration` is 5 s, so it may not exceed
a `max_backoff_duration` of 2 s).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from fastapi_gcp_tasks._limits import (
    BODY_METHODS,
    ID_PATTERN,
    MAX_DISPATCH_DEADLINE,
    MAX_HEADER_BYTES,
    MAX_URL_LENGTH,
    MIN_DISPATCH_DEADLINE,
    SCHEDULER_APP_ENGINE_MAX_ATTEMPT_DEADLINE,
    SCHEDULER_DEFAULT_ATTEMPT_DEADLINE,
    SCHEDULER_MAX_BACKOFF,
    SCHEDULER_MAX_DESCRIPTION,
    SCHEDULER_MAX_DOUBLINGS,
    SCHEDULER_MAX_DOUBLINGS_ACCEPTED,
    SCHEDULER_MAX_JOB_BYTES,
    SCHEDULER_MAX_RETRY_COUNT,
    SCHEDULER_MIN_BACKOFF,
)
from fastapi_gcp_tasks.build._cron import CronSchedule, parse_time_zone
from fastapi_gcp_tasks.build._wire import HEADER_NAME
from fastapi_gcp_tasks.exception import TaskLimitError

__all__ = [
    "JOB_NAME",
    "METHODS",
    "PARENT",
    "POST",
    "check_deadline",
    "check_duration",
    "check_http_target",
    "clear_output",
    "normalise_job",
    "url_problem",
    "validate_job",
]

POST = 1
METHODS: Mapping[int, str] = {1: "POST", 2: "GET", 3: "HEAD", 4: "PUT", 5: "DELETE", 6: "PATCH", 7: "OPTIONS"}
"""`HttpMethod` numbers to names; `google.cloud.tasks.v2` and `google.cloud.scheduler.v1` number them alike."""

PARENT = re.compile(r"projects/[A-Za-z0-9:.\-]{1,100}/locations/[A-Za-z0-9\-]{1,63}")
"""A Cloud Scheduler location, `projects/PROJECT_ID/locations/LOCATION_ID`."""
JOB_NAME = re.compile(rf"(?P<parent>{PARENT.pattern})/jobs/(?P<id>{ID_PATTERN.pattern})")
_TOPIC = re.compile(r"projects/[A-Za-z0-9:.\-]{1,100}/topics/[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_OUTPUT_ONLY = ("user_update_time", "state", "status", "schedule_time", "last_attempt_time")

_MAX_DURATION_SECONDS = 315_576_000_000
"""The largest `google.protobuf.Duration` (10,000 years)."""


def _refuse(message: str, field: str) -> TaskLimitError:
    return TaskLimitError(message, param=field)


# -- durations and deadlines -------------------------------------------------------------------------------------


def check_duration(value: Any, field: str) -> float:
    """A non-negative, well-formed `google.protobuf.Duration` in seconds; refused naming `field` otherwise."""
    whole, nanos = value.seconds, value.nanos
    if not (0 <= whole <= _MAX_DURATION_SECONDS and 0 <= nanos < 1_000_000_000):
        raise _refuse(f"{field} must be a non-negative duration, got {whole}s {nanos}ns", field)
    return float(whole) + float(nanos) / 1e9


def check_deadline(value: Any, field: str) -> float:
    """An HTTP target's deadline in seconds, 15 s to 30 min (`dispatch_deadline`, `attempt_deadline`)."""
    deadline = check_duration(value, field)
    if not MIN_DISPATCH_DEADLINE <= deadline <= MAX_DISPATCH_DEADLINE:
        raise _refuse(f"{field} must be between 15 s and 30 min, got {deadline:g} s", field)
    return deadline


# -- HTTP targets ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def url_problem(url: str) -> str | None:
    """Why the services would refuse `url`, or None; cached because the tasks of one app share a few URLs."""
    if not url:
        return "is required"
    if len(url) > MAX_URL_LENGTH:
        return f"is {len(url)} characters long; at most {MAX_URL_LENGTH} are allowed"
    if not url[:8].lower().startswith(("http://", "https://")):
        return f"{url!r} must be an absolute http:// or https:// URL"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return f"{url!r} contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        _ = parts.port
    except ValueError as exc:
        return f"{url!r} is not a valid URL: {exc}"
    if not hostname:
        return f"{url!r} has no host"
    return None


def _header_problem(name: str, value: str) -> str | None:
    if HEADER_NAME.fullmatch(name) is None:
        return f"{name!r} is not a valid header name"
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return f"[{name!r}] contains control characters"
    return None


def check_headers(headers: Mapping[str, str], prefix: str) -> None:
    """Header names are HTTP tokens, values carry no control characters, and all of them stay under 80 KB."""
    size = 0
    for name, value in headers.items():
        problem = _header_problem(name, value)
        if problem is not None:
            raise _refuse(f"{prefix}.headers{'' if problem.startswith('[') else ': '}{problem}", f"{prefix}.headers")
        size += len(name.encode()) + len(value.encode())
    if size >= MAX_HEADER_BYTES:
        raise _refuse(
            f"{prefix}.headers total {size} bytes; they must stay under 80 KB ({MAX_HEADER_BYTES} bytes)",
            f"{prefix}.headers",
        )


def check_http_target(target: Any, prefix: str, url_field: str) -> str:
    """Check an HTTP target as both services do; returns the method's name.

    `target` is a Cloud Tasks `HttpRequest` or a Cloud Scheduler `HttpTarget` (raw protobuf), `prefix`
    names it in the messages (`task.http_request`, `http_target`) and `url_field` is its URL field (`url`,
    `uri`). The URL must be an absolute http(s) URL of at most 2,083 characters with a host; a body needs
    POST, PUT or PATCH; header names are HTTP tokens, values carry no control characters, and all of them
    stay under 80 KB; an OIDC or OAuth token names a service account.
    """
    url: str = getattr(target, url_field)
    http_method: int = target.http_method
    body: bytes = target.body
    kind = target.WhichOneof("authorization_header")
    problem = url_problem(url)
    if problem is not None:
        raise _refuse(f"{prefix}.{url_field} {problem}", f"{prefix}.{url_field}")
    method = METHODS.get(http_method or POST)
    if method is None:
        raise _refuse(f"{prefix}.http_method {http_method} is not a valid HttpMethod", f"{prefix}.http_method")
    if body and method not in BODY_METHODS:
        raise _refuse(f"{prefix}.body is only allowed with POST, PUT or PATCH, not {method}", f"{prefix}.body")
    check_headers(target.headers, prefix)
    if kind is not None:
        email = getattr(target, kind).service_account_email
        field = f"{prefix}.{kind}.service_account_email"
        if not email:
            raise _refuse(f"{field} is required", field)
        if "@" not in email:
            raise _refuse(f"{field} {email!r} is not a service account email", field)
    return method


# -- Cloud Scheduler jobs ----------------------------------------------------------------------------------------


def clear_output(job: Any) -> None:
    """Clear the output-only fields of a raw `Job` (the service ignores what a request puts there)."""
    for name in _OUTPUT_ONLY:
        job.ClearField(name)


def normalise_job(job: Any) -> None:
    """Fill the defaults the service stores for unset fields of a raw `Job`, in place."""
    kind = job.WhichOneof("target")
    if kind == "http_target" and not job.http_target.http_method:
        job.http_target.http_method = POST
    if kind == "app_engine_http_target" and not job.app_engine_http_target.http_method:
        job.app_engine_http_target.http_method = POST
    if kind == "http_target" and not job.HasField("attempt_deadline"):
        job.attempt_deadline.seconds = int(SCHEDULER_DEFAULT_ATTEMPT_DEADLINE)
    retry = job.retry_config
    if not retry.HasField("min_backoff_duration"):
        retry.min_backoff_duration.seconds = int(SCHEDULER_MIN_BACKOFF)
    if not retry.HasField("max_backoff_duration"):
        retry.max_backoff_duration.seconds = int(SCHEDULER_MAX_BACKOFF)
    if not retry.HasField("max_retry_duration"):
        retry.max_retry_duration.SetInParent()
    if not retry.max_doublings:
        retry.max_doublings = SCHEDULER_MAX_DOUBLINGS


def validate_job(job: Any) -> tuple[CronSchedule, dt.tzinfo]:
    """Check a normalised raw `Job` as Cloud Scheduler would; returns its parsed cron and time zone."""
    if len(job.description) > SCHEDULER_MAX_DESCRIPTION:
        raise _refuse(f"description is longer than {SCHEDULER_MAX_DESCRIPTION} characters", "description")
    if not job.schedule:
        raise _refuse("schedule is required", "schedule")
    cron = CronSchedule.parse(job.schedule)
    tz = parse_time_zone(job.time_zone)
    kind = job.WhichOneof("target")
    if kind is None:
        raise _refuse("a job needs a target: http_target, pubsub_target or app_engine_http_target", "target")
    deadline = job.attempt_deadline if job.HasField("attempt_deadline") else None
    if kind == "http_target":
        check_http_target(job.http_target, "http_target", "uri")
        if deadline is not None:
            check_deadline(deadline, "attempt_deadline")
    elif kind == "pubsub_target":
        if _TOPIC.fullmatch(job.pubsub_target.topic_name) is None:
            raise _refuse(
                f"pubsub_target.topic_name={job.pubsub_target.topic_name!r} is not projects/PROJECT_ID/topics/TOPIC_ID",
                "pubsub_target.topic_name",
            )
    else:
        target = job.app_engine_http_target
        if target.relative_uri and not target.relative_uri.startswith("/"):
            raise _refuse("app_engine_http_target.relative_uri must start with '/'", "app_engine_http_target")
        if target.http_method and target.http_method not in METHODS:
            raise _refuse(
                f"app_engine_http_target.http_method={target.http_method} is not an HTTP method",
                "app_engine_http_target",
            )
        seconds_ = check_duration(deadline, "attempt_deadline") if deadline is not None else 0.0
        if seconds_ and not MIN_DISPATCH_DEADLINE <= seconds_ <= SCHEDULER_APP_ENGINE_MAX_ATTEMPT_DEADLINE:
            raise _refuse(
                "attempt_deadline must be 0 or between 15 seconds and 24 hours 15 seconds for App Engine",
                "attempt_deadline",
            )
    retry = job.retry_config
    if not 0 <= retry.retry_count <= SCHEDULER_MAX_RETRY_COUNT:
        raise _refuse(
            f"retry_config.retry_count must be between 0 and {SCHEDULER_MAX_RETRY_COUNT}, got {retry.retry_count}",
            "retry_config.retry_count",
        )
    if not 0 <= retry.max_doublings <= SCHEDULER_MAX_DOUBLINGS_ACCEPTED:
        raise _refuse(
            f"retry_config.max_doublings must be between 0 and {SCHEDULER_MAX_DOUBLINGS_ACCEPTED}, "
            f"got {retry.max_doublings}",
            "retry_config.max_doublings",
        )
    check_duration(retry.max_retry_duration, "retry_config.max_retry_duration")
    low = check_duration(retry.min_backoff_duration, "retry_config.min_backoff_duration")
    high = check_duration(retry.max_backoff_duration, "retry_config.max_backoff_duration")
    for name, value in (("min_backoff_duration", low), ("max_backoff_duration", high)):
        if value > SCHEDULER_MAX_BACKOFF:
            raise _refuse(f"retry_config.{name} must be at most 1 hour, got {value}s", f"retry_config.{name}")
    if low > high:
        raise _refuse(
            "retry_config.min_backoff_duration must not exceed max_backoff_duration",
            "retry_config.min_backoff_duration",
        )
    if job.ByteSize() > SCHEDULER_MAX_JOB_BYTES:
        raise _refuse("a job may be at most 1 MB", "job")
    return cron, tz
