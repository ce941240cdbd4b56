"""Hooks that adjust a task's or a job's request just before it is sent.

A hook takes the `CreateTaskRequest` (delayed routes) or `CreateJobRequest` (scheduled routes) and
returns it, usually changed in place. Pass one as `pre_create_hook=`, or several with `chained_hook`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from google.cloud import scheduler_v1, tasks_v2
from google.protobuf import duration_pb2

__all__ = [
    "DelayedTaskHook",
    "ScheduledHook",
    "chained_hook",
    "deadline_delayed_hook",
    "deadline_scheduled_hook",
    "noop_hook",
    "oauth_delayed_hook",
    "oauth_scheduled_hook",
    "oidc_delayed_hook",
    "oidc_scheduled_hook",
]

DelayedTaskHook = Callable[[tasks_v2.CreateTaskRequest], tasks_v2.CreateTaskRequest]
ScheduledHook = Callable[[scheduler_v1.CreateJobRequest], scheduler_v1.CreateJobRequest]

RequestT = TypeVar("RequestT")


def noop_hook(request: RequestT) -> RequestT:
    """Return the request unchanged."""
    return request


def chained_hook(*hooks: Callable[[RequestT], RequestT]) -> Callable[[RequestT], RequestT]:
    """One hook that runs `hooks` in order, each on the previous one's result."""

    def chain(request: RequestT) -> RequestT:
        for hook in hooks:
            request = hook(request)
        return request

    return chain


def oidc_delayed_hook(token: tasks_v2.OidcToken | None = None) -> DelayedTaskHook:
    """Have Cloud Tasks sign each request with an OIDC token (`Authorization: Bearer ...`).

    Set `token.audience` explicitly when the URL has a query string: the default audience is the full URL,
    which Cloud Run then rejects.
    """
    token = token if token is not None else tasks_v2.OidcToken()

    def add_token(request: tasks_v2.CreateTaskRequest) -> tasks_v2.CreateTaskRequest:
        request.task.http_request.oidc_token = token
        return request

    return add_token


def oidc_scheduled_hook(token: scheduler_v1.OidcToken | None = None) -> ScheduledHook:
    """Have Cloud Scheduler sign each request with an OIDC token."""
    token = token if token is not None else scheduler_v1.OidcToken()

    def add_token(request: scheduler_v1.CreateJobRequest) -> scheduler_v1.CreateJobRequest:
        request.job.http_target.oidc_token = token
        return request

    return add_token


def oauth_delayed_hook(token: tasks_v2.OAuthToken | None = None) -> DelayedTaskHook:
    """Have Cloud Tasks send an OAuth access token (for Google APIs as targets)."""
    token = token if token is not None else tasks_v2.OAuthToken()

    def add_token(request: tasks_v2.CreateTaskRequest) -> tasks_v2.CreateTaskRequest:
        request.task.http_request.oauth_token = token
        return request

    return add_token


def oauth_scheduled_hook(token: scheduler_v1.OAuthToken | None = None) -> ScheduledHook:
    """Have Cloud Scheduler send an OAuth access token."""
    token = token if token is not None else scheduler_v1.OAuthToken()

    def add_token(request: scheduler_v1.CreateJobRequest) -> scheduler_v1.CreateJobRequest:
        request.job.http_target.oauth_token = token
        return request

    return add_token


def _duration(value: duration_pb2.Duration | dt.timedelta | float) -> duration_pb2.Duration:
    if isinstance(value, duration_pb2.Duration):
        return value
    seconds = value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
    duration = duration_pb2.Duration()
    duration.FromTimedelta(dt.timedelta(seconds=seconds))
    return duration


def deadline_delayed_hook(duration: duration_pb2.Duration | dt.timedelta | float) -> DelayedTaskHook:
    """Set the task's dispatch deadline (15 s to 30 min); prefer the `dispatch_deadline` option."""
    deadline = _duration(duration)

    def set_deadline(request: tasks_v2.CreateTaskRequest) -> tasks_v2.CreateTaskRequest:
        request.task.dispatch_deadline = deadline
        return request

    return set_deadline


def deadline_scheduled_hook(duration: duration_pb2.Duration | dt.timedelta | float) -> ScheduledHook:
    """Set the job's attempt deadline (15 s to 30 min); prefer the `attempt_deadline` option."""
    deadline = _duration(duration)

    def set_deadline(request: scheduler_v1.CreateJobRequest) -> scheduler_v1.CreateJobRequest:
        request.job.attempt_deadline = deadline
        return request

    return set_deadline
