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

# -- Cloud Scheduler ---------------------------------------------------------------------------------------------

SCHEDULER_MAX_RETRY_COUNT = 5
SCHEDULER_DEFAULT_ATTEMPT_DEADLINE = 180.0
SCHEDULER_MIN_BACKOFF = 5.0
SCHEDULER_MAX_BACKOFF = 3600.0
SCHEDULER_MAX_DOUBLINGS = 5
SCHEDULER_LIST_PAGE_SIZE = 500
