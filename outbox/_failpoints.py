"""Named points where a test can freeze a relay or CLI process, to kill it there with SIGKILL.

Set `FASTAPI_GCP_TASKS_OUTBOX_FAILPOINT` to one of `claimed`, `sent` or `finishing` (the relay) or
`requeued-batch` (`outbox requeue`, after each committed batch) before starting the process:
when it reaches that point it prints `failpoint NAME` on stderr and blocks forever. Unset (always, in production),
each point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys
import time

ENV_VAR = "FASTAPI_GCP_TASKS_OUTBOX_FAILPOINT"


def failpoint(name: str) -> None:
    """Freeze here if the environment names this point."""
    if os.environ.get(ENV_VAR) == name:
        print(f"failpoint {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
