"""`max_retries`: stop running a task's handler after a number of attempts, and keep what was given up.

```python
@task_router.post("/send-email", dependencies=[Depends(verify), Depends(max_retries(5, on_give_up=sink))])
async def send_email(p: Email) -> None: ...
```
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant

from fastapi_gcp_tasks.exception import WorkerConfigError
from fastapi_gcp_tasks.receive._auth import dependency_calls, may_act
from fastapi_gcp_tasks.receive._letters import DeadLetterSink, LetterLedger, letter_from_request
from fastapi_gcp_tasks.receive._metadata import CloudTasksHeaders

__all__ = ["GAVE_UP_HEADER", "declared_retry_limit", "max_retries"]

logger = logging.getLogger("fastapi_gcp_tasks.worker")

GAVE_UP_HEADER = "x-gcp-tasks-gave-up"
"""Response header of a give-up acknowledgement, its value the task's retry count.

The 2xx tells Cloud Tasks to stop; this header tells whoever reads the response (the emulator's log, a proxy)
that the handler did not run and the task was given up, rather than done."""

RETRY_LIMIT_ATTR = "fastapi_gcp_tasks_max_retries"
"""The attribute of a `max_retries` dependency that holds its count (read by the sending side's queue check)."""


def max_retries(
    count: int = 20, on_give_up: DeadLetterSink | None = None
) -> Callable[[Request, CloudTasksHeaders], Awaitable[None]]:
    """A dependency that acknowledges a task without running the handler once `retry_count >= count`.

    Cloud Tasks stops delivering a task as soon as it gets a 2xx, so this caps the attempts of one
    endpoint below the queue's `max_attempts`: the handler runs on attempts 0 .. count-1 at most.
    The acknowledgement is a 200 with a JSON `detail` and the header `GAVE_UP_HEADER` (the retry count), so
    that it cannot pass for a success: the emulator logs it as a warning. The queue must allow `count + 1` attempts for
    the give-up to happen: with fewer, Cloud Tasks drops the task first (the sender logs a warning
    when it can read the queue's retry settings).

    The retry count is a header anyone can send, so the dependency acts only on a request that the
    route's `OIDCVerifier` accepted (it runs the verifier first, wherever it is declared), or on a
    route declared `PrivateEndpoint`; on a route with neither it does nothing, and says so once.

    `on_give_up`, a sync or async callable, receives a `DeadLetter` (reason `"max_retries"`) before the
    acknowledgement; if it raises, the worker answers 500 and Cloud Tasks tries again, so a task is
    never given up unrecorded. It is called once per task even when Cloud Tasks delivers the task again
    because the acknowledgement was lost (within one process; see `DeadLetter.key` for the sink's side).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise WorkerConfigError(f"count must be an int >= 1, got {count!r}", param="count")
    if on_give_up is not None and not callable(on_give_up):
        raise WorkerConfigError(f"on_give_up must be callable, got {on_give_up!r}", param="on_give_up")
    ledger = LetterLedger()

    async def give_up_after_retries(request: Request, meta: CloudTasksHeaders = Depends()) -> None:
        if meta.retry_count < count or not await may_act(request, "max_retries"):
            return
        logger.warning(
            "giving up task %s of queue %s after %d retries (limit %d)",
            meta.task_name,
            meta.queue_name,
            meta.retry_count,
            count,
        )
        if on_give_up is not None:
            try:
                await ledger.deliver(on_give_up, await letter_from_request(request, "max_retries"))
            except Exception as error:
                # An HTTP error, not the sink's own: a poison policy must not take it for the handler failing.
                logger.exception("on_give_up failed; answering 500 so the task is delivered again")
                raise HTTPException(500, "the given-up task could not be recorded; deliver it again") from error
        raise HTTPException(
            status_code=200,
            detail=f"gave up after {meta.retry_count} retries (max_retries={count})",
            headers={GAVE_UP_HEADER: str(meta.retry_count)},
        )

    setattr(give_up_after_retries, RETRY_LIMIT_ATTR, count)
    return give_up_after_retries


def declared_retry_limit(dependant: Dependant) -> int | None:
    """The smallest count of the `max_retries` dependencies of a route, or None when it has none."""
    limits = [getattr(call, RETRY_LIMIT_ATTR, None) for call in dependency_calls(dependant)]
    return min((limit for limit in limits if isinstance(limit, int)), default=None)
