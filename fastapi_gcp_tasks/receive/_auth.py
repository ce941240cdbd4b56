"""Authentication first: nothing acts on a task request before the route's authenticators accept it.

FastAPI reads and validates a request's body before it runs any dependency, and runs dependencies in
the order they are declared. Left to that order, a policy that dead-letters invalid bodies, or a
`max_retries` declared before the verifier, would act on a request nobody has authenticated, trusting
`X-CloudTasks-*` headers that anyone can send. This module takes the order out of the user's hands:

* an `Authenticator` (`OIDCVerifier`, `PrivateEndpoint`) keeps its verdict for the request, so running
  it early costs nothing when FastAPI runs it again as a dependency;
* `authenticate(request)` runs every authenticator declared anywhere on the request's route (app,
  router, route or parameter dependencies) and raises the first refusal (401, 403, 503);
* `WorkerRoute` calls it before FastAPI reads the body, and keeps the raw body for dead letters;
* `may_act(request, what)` is the gate of every piece that acts on task headers or writes something
  (`max_retries`, `PoisonPolicy`): true only for a request the route's authenticators accepted; false,
  with an error logged once per route, where the route has no authenticator at all.
"""

# No `from __future__ import annotations`: FastAPI 0.115 cannot resolve string annotations on the `__call__`
# of a dependency instance, and would take `request` for a query parameter.
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import Scope

from fastapi_gcp_tasks.build._reach import bind_app_on_request
from fastapi_gcp_tasks.exception import WorkerConfigError

__all__ = ["Authenticator", "PrivateEndpoint", "WorkerRoute", "authenticate", "authenticated_first", "may_act"]

logger = logging.getLogger("fastapi_gcp_tasks.worker")

RAW_BODY = "fastapi_gcp_tasks.raw_body"
"""Scope key: the request's body as received, kept once the route's authenticators accepted the request."""
_ACCEPTED = "fastapi_gcp_tasks.accepted"
"""Scope key: the route's authenticators, once `authenticate` saw all of them accept the request."""
_VERDICTS = "fastapi_gcp_tasks.verdicts"
"""Scope key: `{id(authenticator): (accepted, value or the HTTPException it raised)}` for this request."""

RouteHandler = Callable[[Request], Coroutine[Any, Any, Response]]


class Authenticator:
    """A dependency that decides who is calling; subclasses implement `check`.

    Use an instance as a dependency (`Depends(verifier)`) anywhere on a route: the worker pieces of this
    library find it there and run it before they act, whatever the order of the declarations. Its
    verdict is computed once per request.
    """

    async def check(self, request: Request) -> Any:
        """The caller's identity, or raise the `HTTPException` to answer (401, 403, 503)."""
        raise NotImplementedError

    async def __call__(self, request: Request) -> Any:
        return await verdict(self, request)


async def verdict(authenticator: Authenticator, request: Request) -> Any:
    """`authenticator.check(request)`, computed at most once per request; a refusal is raised again."""
    verdicts: dict[int, tuple[bool, Any]] = request.scope.setdefault(_VERDICTS, {})
    known = verdicts.get(id(authenticator))
    if known is None:
        try:
            value = await authenticator.check(request)
        except Exception as refusal:
            verdicts[id(authenticator)] = (False, refusal)
            raise
        verdicts[id(authenticator)] = (True, value)
        return value
    accepted, value = known
    if not accepted:
        raise value
    return value


class PrivateEndpoint(Authenticator):
    """Declares that only authenticated callers can reach the endpoint, so the app need not check.

    For a worker that sits behind an identity-aware layer: Cloud Run with `--no-allow-unauthenticated`
    and `roles/run.invoker` granted to the tasks' service account only, or IAP. `reason` says which; it
    is logged (a warning, once) the first time the endpoint acts on a task request:

    ```python
    private = PrivateEndpoint("Cloud Run IAM: only tasks@proj.iam.gserviceaccount.com holds run.invoker")
    router = APIRouter(dependencies=[Depends(private), Depends(max_retries(5, on_give_up=sink))])
    ```

    It accepts every request. Prefer `OIDCVerifier`, which keeps protecting the endpoint if the service
    is ever made public by mistake.
    """

    def __init__(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise WorkerConfigError(
                "reason must say what keeps unauthenticated callers out (for example 'Cloud Run IAM')",
                param="reason",
            )
        self.reason = reason.strip()
        self._announced = False

    async def check(self, request: Request) -> None:
        if not self._announced:
            self._announced = True
            logger.warning(
                "%s %s trusts every caller that reaches it: declared private (%s)",
                request.method,
                request.url.path,
                self.reason,
            )

    def __repr__(self) -> str:
        return f"PrivateEndpoint({self.reason!r})"


# The authenticators found in a dependant tree, by id of the dependant (which the entry keeps alive).
_found: dict[int, tuple[Dependant, tuple[Authenticator, ...]]] = {}
_REFUSALS_LOGGED = "_fastapi_gcp_tasks_refusals_logged"
"""Route attribute: the pieces whose refusal to act was logged for that route (once each)."""


def _effective(scope: Scope) -> Any:
    """The object holding the route's complete dependencies: since FastAPI 0.16x an inclusion context
    (router-level dependencies added by `include_router` live there), before that the route itself."""
    route = scope.get("route")
    fastapi_scope = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    if context is not None and getattr(context, "original_route", None) is route and context.dependant is not None:
        return context
    return route


def dependency_calls(dependant: Dependant) -> Iterator[Any]:
    """Every callable a dependant depends on, at any depth, once each, in declaration order."""
    seen: set[int] = set()
    stack = list(reversed(dependant.dependencies))
    while stack:
        sub = stack.pop()
        if sub.call is not None and id(sub.call) not in seen:
            seen.add(id(sub.call))
            yield sub.call
        stack.extend(reversed(sub.dependencies))


def route_authenticators(scope: Scope) -> tuple[Authenticator, ...]:
    """Every authenticator declared on the request's route, in declaration order (computed once per route)."""
    dependant = getattr(_effective(scope), "dependant", None)
    if not isinstance(dependant, Dependant):
        return ()
    cached = _found.get(id(dependant))
    if cached is not None and cached[0] is dependant:
        return cached[1]
    found = tuple(call for call in dependency_calls(dependant) if isinstance(call, Authenticator))
    _found[id(dependant)] = (dependant, found)
    return found


async def authenticate(request: Request) -> tuple[Authenticator, ...]:
    """Run the route's authenticators; raise the first refusal. Returns the authenticators found.

    An authenticator replaced through `app.dependency_overrides` (in tests) is left to its override,
    which FastAPI runs in its place.
    """
    accepted: tuple[Authenticator, ...] | None = request.scope.get(_ACCEPTED)
    if accepted is not None:  # every authenticator of the route already accepted this request
        return accepted
    found = route_authenticators(request.scope)
    if found:
        provider = getattr(_effective(request.scope), "dependency_overrides_provider", None)
        overrides = getattr(provider, "dependency_overrides", None) or {}
        for authenticator in found:
            if authenticator not in overrides:
                await verdict(authenticator, request)
    request.scope[_ACCEPTED] = found
    return found


async def may_act(request: Request, what: str) -> bool:
    """Whether `what` may act on this request: its route's authenticators accepted it.

    Raises the refusal of an authenticator that does not accept it. Where the route has no
    authenticator at all, answers False and logs an error once for the route: the request's task
    headers prove nothing, so `what` must not trust them.
    """
    if await authenticate(request):
        return True
    route = request.scope.get("route")
    said: set[str] = getattr(route, _REFUSALS_LOGGED, set())
    if what not in said:
        said.add(what)
        if route is not None:
            setattr(route, _REFUSALS_LOGGED, said)
        logger.error(
            "%s on %s %s does nothing: the route has no OIDCVerifier, so anyone could trigger it with forged "
            "Cloud Tasks headers. Add Depends(OIDCVerifier(...)) to the route or router, or "
            "Depends(PrivateEndpoint('why only authenticated callers can reach it')).",
            what,
            request.method,
            request.url.path,
        )
    return False


def authenticated_first(handler: RouteHandler) -> RouteHandler:
    """Wrap a route handler: authenticate, keep the raw body, then let FastAPI read and validate it."""

    async def handle(request: Request) -> Response:
        await authenticate(request)
        # Starlette keeps the body it reads, so a dead letter never has to re-read a consumed stream
        # (FastAPI consumes the stream itself when it parses a form); history reads it from the scope.
        request.scope[RAW_BODY] = await request.body()
        try:
            return await handler(request)
        except RequestValidationError as error:
            _printable_inputs(error)
            raise

    return handle


def _printable_inputs(error: RequestValidationError) -> None:
    """Make the inputs the errors quote encodable: a binary body would make FastAPI's own 422 answer fail (500)."""
    for detail in error.errors():
        value = detail.get("input") if isinstance(detail, dict) else None
        if isinstance(value, bytes):
            detail["input"] = value.decode("utf-8", "backslashreplace")


class WorkerRoute(APIRoute):
    """An `APIRoute` that authenticates a request before FastAPI reads its body.

    Without it, a request with a malformed body gets FastAPI's 422 before any authenticator runs. The
    route classes of the builders and of `poison_route_class` are worker routes.
    """

    def get_route_handler(self) -> RouteHandler:
        return bind_app_on_request(self, authenticated_first(super().get_route_handler()))
