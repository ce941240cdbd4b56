"""Poison messages: task requests the endpoint can never accept.

A task whose payload fails the endpoint's validation gets a 422, and Cloud Tasks retries it (100
times with the default queue settings) although every attempt will fail the same way. A
`PoisonPolicy` acknowledges such a request with a 2xx instead, after handing it to a dead-letter
sink, so it is kept for inspection and replay rather than retried or silently lost:

```python
router = APIRouter(
    route_class=poison_route_class(APIRoute, PoisonPolicy(sink=my_sink)),
    dependencies=[Depends(verify)],  # an OIDCVerifier: the policy acts only on authenticated requests
)
```

The sink is any callable, sync or async, that takes one `DeadLetter`. If the sink fails, the request
is *not* acknowledged: the original 422 goes back and Cloud Tasks retries, so a dead letter is never
dropped. `max_retries(..., on_give_up=sink)` hands the tasks it gives up to the same kind of sink.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from fastapi_gcp_tasks.exception import WorkerConfigError
from fastapi_gcp_tasks.receive import _headers as h
from fastapi_gcp_tasks.receive._auth import RouteHandler, WorkerRoute, authenticated_first, may_act
from fastapi_gcp_tasks.receive._letters import (
    DeadLetterReason,
    DeadLetterSink,
    LetterLedger,
    letter_from_request,
    log_dead_letter,
)

__all__ = ["DEAD_LETTERED", "PoisonPolicy", "poison_route_class"]

logger = logging.getLogger("fastapi_gcp_tasks.dead_letter")

DEAD_LETTERED = "fastapi_gcp_tasks.dead_lettered"
"""Scope key set when a policy acknowledged the request as a dead letter: `(reason, errors)` (read by history)."""


@dataclass(frozen=True, slots=True)
class PoisonPolicy:
    """What to do with a task request that fails the endpoint's request validation, or keeps failing its handler.

    * `sink` receives the `DeadLetter` before the request is acknowledged (default: `log_dead_letter`).
    * `status_code` is the 2xx the worker answers with, so Cloud Tasks stops retrying (default 200).
    * `dead_letter_after_retries` lets the first N retries fail with the usual 422 before giving up;
      useful during a rolling deploy, when a new sender may reach an old worker for a while.
    * `only_task_requests`: apply the policy only to requests carrying `X-CloudTasks-TaskName` or
      `X-CloudScheduler` (default), so other callers of the endpoint still get their 422.
      These headers prove nothing about the caller: the policy acts only on requests that the route's
      `OIDCVerifier` accepted (or on a route declared `PrivateEndpoint`), and never on a route without either.
    * `handler_errors_after`: None (default) lets an exception of the handler answer 500, so Cloud
      Tasks retries it: it may be transient. A number N dead-letters the task (reason `"handler_error"`)
      when the handler raises on retry N or later, so it is kept rather than dropped once the queue's
      `max_attempts` runs out. `HTTPException`s and exceptions the app has a handler for answer as usual.
    """

    sink: DeadLetterSink = log_dead_letter
    status_code: int = 200
    dead_letter_after_retries: int = 0
    only_task_requests: bool = True
    handler_errors_after: int | None = None
    _ledger: LetterLedger = field(default_factory=LetterLedger, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not callable(self.sink):
            raise WorkerConfigError(f"sink must be callable, got {self.sink!r}", param="sink")
        if isinstance(self.status_code, bool) or not isinstance(self.status_code, int):
            raise WorkerConfigError(f"status_code must be an int, got {self.status_code!r}", param="status_code")
        if not 200 <= self.status_code <= 299 or self.status_code in (204, 205):
            raise WorkerConfigError(
                f"status_code must be a 2xx with a body (Cloud Tasks retries anything else), got {self.status_code}",
                param="status_code",
            )
        counts = {"dead_letter_after_retries": self.dead_letter_after_retries}
        if self.handler_errors_after is not None:
            counts["handler_errors_after"] = self.handler_errors_after
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise WorkerConfigError(f"{name} must be an int >= 0, got {value!r}", param=name)

    async def _applies(self, request: Request, from_retry: int) -> bool:
        """Whether to dead-letter `request` now: authenticated, sent for a task, and at retry `from_retry` or later.

        Raises the refusal of the route's authenticator; False on a route that has none.
        """
        if not await may_act(request, "PoisonPolicy"):
            return False
        headers = request.headers
        from_a_task = h.text(headers.get(h.TASK_NAME)) is not None or h.flag(headers.get(h.SCHEDULER))
        retry_count = h.integer(headers.get(h.RETRY_COUNT)) or 0
        return (from_a_task or not self.only_task_requests) and retry_count >= from_retry

    async def on_invalid(self, request: Request, error: RequestValidationError) -> Response | None:
        """Dead-letter an invalid `request` and return the acknowledging response; None to answer the 422.

        None when the policy does not apply, when the route has no authenticator, and when the sink
        fails (logged): Cloud Tasks then delivers the task again. Raises the authenticator's refusal.
        """
        if not await self._applies(request, self.dead_letter_after_retries):
            return None
        errors = jsonable_encoder(error.errors())
        if not await self._keep(request, "invalid_request", errors, answer="422"):
            return None
        return JSONResponse(
            {"detail": "dead-lettered: the request failed validation", "errors": errors}, self.status_code
        )

    async def on_handler_error(self, request: Request, error: Exception) -> Response | None:
        """Dead-letter a task whose handler raised, once `handler_errors_after` is reached; None to answer 500."""
        after = self.handler_errors_after
        if after is None or _has_handler(request, error) or not await self._applies(request, after):
            return None
        errors = [{"type": type(error).__qualname__, "msg": str(error)}]
        logger.error("handler of %s %s failed; dead-lettering it", request.method, request.url.path, exc_info=error)
        if not await self._keep(request, "handler_error", errors, answer="500"):
            return None
        return JSONResponse({"detail": "dead-lettered: the handler failed", "errors": errors}, self.status_code)

    async def _keep(self, request: Request, reason: DeadLetterReason, errors: Any, *, answer: str) -> bool:
        try:
            await self._ledger.deliver(self.sink, await letter_from_request(request, reason, errors))
        except Exception:
            logger.exception("dead-letter sink failed; answering %s so the task is delivered again", answer)
            return False
        request.scope[DEAD_LETTERED] = (reason, errors)
        return True


def _has_handler(request: Request, error: Exception) -> bool:
    """Whether the app maps `error` to a response of its own (`app.exception_handler`), which then applies."""
    handlers = getattr(request.app, "exception_handlers", None) or {}
    return any(cls in handlers for cls in type(error).__mro__ if cls not in (Exception, BaseException))


def poison_route_class(base: type[APIRoute] = APIRoute, policy: PoisonPolicy | None = None) -> type[APIRoute]:
    """A subclass of `base` whose endpoints apply `policy` (default `PoisonPolicy()`) to failing task requests.

    Use it as `APIRouter(route_class=poison_route_class(APIRoute, policy))`, or wrap a builder's route class
    (`poison_route_class(DelayedRouteBuilder(...), policy)`, the same as the builder's `poison_policy=`).
    `base` may itself be a custom route class; its handler runs unchanged, after the route's authenticators
    (the route is a worker route, see `WorkerRoute`).
    """
    if not (isinstance(base, type) and issubclass(base, APIRoute)):
        raise WorkerConfigError(f"base must be a subclass of fastapi.routing.APIRoute, got {base!r}", param="base")
    if policy is None:
        policy = PoisonPolicy()
    elif not isinstance(policy, PoisonPolicy):
        raise WorkerConfigError(f"policy must be a PoisonPolicy, got {policy!r}", param="policy")
    chosen = policy

    class PoisonAwareRoute(base):  # type: ignore[valid-type,misc]
        poison_policy = chosen

        def get_route_handler(self) -> RouteHandler:
            handler: RouteHandler = super().get_route_handler()
            if not issubclass(base, WorkerRoute):
                handler = authenticated_first(handler)

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except RequestValidationError as error:
                    response = await chosen.on_invalid(request, error)
                    if response is None:
                        raise
                    return response
                except HTTPException:
                    raise
                except Exception as error:
                    response = await chosen.on_handler_error(request, error)
                    if response is None:
                        raise
                    return response

            return handle

    PoisonAwareRoute.__name__ = PoisonAwareRoute.__qualname__ = f"PoisonAware{base.__name__}"
    return PoisonAwareRoute
