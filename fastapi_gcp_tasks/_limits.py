"""Google's limits and defaults for Cloud Tasks and Cloud Scheduler, written once.

The sending side refuses what the services would refuse, the relay and the emulator enforce the same
values, and the tests pin them. Sources: the services' quotas and API references (late 2026), and the
behaviour recorded from the real services (see DESIGN.md).
"""

from __future__ import annotations

import datetime as dt
import re

# -- names -------------------------------------------------------------------------------------------------------

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,500}")
"""Task ids and job ids: 1 to 500 characters from `[A-Za-z0-9_-]`."""
MAX_ID_LENGTH = 500
QUEUE_ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,100}")
"""Queue ids: 1 to 100 characters from `[A-Za-z0-9-]`."""

# -- Cloud Tasks -------------------------------------------------------------------------------------------------

MAX_TASK_BYTES = 1024 * 1024
"""A task may be 1 MB. Google counts a KB as 1,024 bytes here: App Engine's task queue SDK defined its
older 100 KB limit as 100 x 1,024, and Cloud Tasks kept the convention."""
MAX_URL_LENGTH = 2083
MAX_HEADER_BYTES = 80_000
"""The headers of a task's HTTP request must stay under 80 KB."""
MAX_SCHEDULE_AHEAD = dt.timedelta(days=30)
MAX_TASK_RETENTION = dt.timedelta(days=31)
MIN_DISPATCH_DEADLINE = 15.0
"""Seconds; the same bounds apply to Cloud Scheduler's `attempt_deadline`."""
MAX_DISPATCH_DEADLINE = 1800.0
DEFAULT_DISPATCH_DEADLINE = 600.0
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
"""The only HTTP methods whose requests may carry a body."""
BATCH_CREATE_LIMIT = 100
"""`batch_create_tasks` takes at most 100 requests, all of one queue."""
NAME_REUSE_WINDOW = dt.timedelta(hours=24)
"""How long the name of a finished or deleted task stays taken (ALREADY_EXISTS)."""

MAX_DISPATCHES_PER_SECOND = 500.0
DEFAULT_MAX_CONCURRENT_DISPATCHES = 1000
MAX_CONCURRENT_DISPATCHES = 5000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = 0.1
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_MAX_DOUBLINGS = 16
MAX_BURST_SIZE = 100
"""The `rate_limits.max_burst_size` the service derives: max_dispatches_per_second rounded up, at most 100."""
LIST_TASKS_PAGE_SIZE = 1000
"""`ListTasks` (and `ListQueues`) return at most 1,000 items a page."""

# -- Cloud Scheduler ---------------------------------------------------------------------------------------------

SCHEDULER_MAX_RETRY_COUNT = 5
"""`retry_config.retry_count` is 0 (the default: no retry) to 5."""
SCHEDULER_MIN_ATTEMPT_DEADLINE = MIN_DISPATCH_DEADLINE
"""Seconds; `attempt_deadline` of an HTTP-target job is 15 s to 30 min."""
SCHEDULER_MAX_ATTEMPT_DEADLINE = MAX_DISPATCH_DEADLINE
SCHEDULER_DEFAULT_ATTEMPT_DEADLINE = 180.0
"""Seconds; what the service stores when `attempt_deadline` is left unset."""
SCHEDULER_MIN_BACKOFF = 5.0
"""Seconds; the `min_backoff_duration` the service stores when it is left unset."""
SCHEDULER_MAX_BACKOFF = 3600.0
"""Seconds; the `max_backoff_duration` stored when it is left unset, and the most either backoff may be."""
SCHEDULER_MAX_DOUBLINGS = 5
"""The `max_doublings` the service stores when it is left 0."""
SCHEDULER_MAX_DOUBLINGS_ACCEPTED = 16
"""The largest `retry_config.max_doublings` accepted (Google documents the default, 5, but no maximum; the
emulator and the library both apply this bound)."""
SCHEDULER_LIST_PAGE_SIZE = 500
"""`ListJobs` returns at most 500 jobs a page."""
SCHEDULER_MAX_JOB_BYTES = 1024 * 1024
"""A job may be 1 MB (1,024 x 1,024 bytes, as for tasks)."""
SCHEDULER_MAX_DESCRIPTION = 500
"""A job's `description` holds at most 500 characters."""
SCHEDULER_APP_ENGINE_MAX_ATTEMPT_DEADLINE = 24 * 3600.0 + 15
"""Seconds; `attempt_deadline` of an App Engine job is 15 s to 24 h 15 s."""
