"""The console's ASGI app: server-rendered pages over any `ConsoleBackend`, with its defences built in.

One inner FastAPI app so that the user's `auth` dependency has FastAPI's `Depends` semantics (sync or async,
sub-dependencies, `HTTPException(401)` becomes a 401) and runs before every route: pages, the static files,
the live-update endpoint and the actions. Pages are plain HTML forms and links (everything works with
JavaScript off); a small vendored script polls `_live` and swaps the page's main region when what it shows
changed.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import importlib.resources
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, get_args
from urllib.parse import parse_qs, quote, urlencode

try:
    import jinja2
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the console needs Jinja2: pip install 'fastapi-gcp-tasks[console]'") from exc

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp

from fastapi_gcp_tasks.console._backend import (
    ConsoleBackend,
    JobAction,
    LetterAction,
    QueueAction,
    TaskAction,
)
from fastapi_gcp_tasks.console._chart import throughput_charts
from fastapi_gcp_tasks.console._errors import ConsoleActionError, ConsoleConfigError
from fastapi_gcp_tasks.console._security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SecurityHeaders,
    cross_site_reason,
    is_loopback_client,
    is_loopback_host,
    new_csrf_token,
    valid_csrf_token,
)

__all__ = ["TASK_STATUSES", "console_app", "require_auth"]

logger = logging.getLogger("fastapi_gcp_tasks.console")

TASK_STATUSES = ("pending", "running", "succeeded", "failed", "retrying", "dead_letter")
_FLASH_COOKIE = "fgt_console_flash"
_MAX_FORM_BYTES = 64 * 1024
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_ACTIONS: Mapping[str, tuple[str, ...]] = {
    "queue": get_args(QueueAction),
    "task": get_args(TaskAction),
    "letter": get_args(LetterAction),
    "job": get_args(JobAction),
    "clock": ("advance",),
}
_FEATURE_OF_PAGE = {"dead-letters": "dead_letters", "schedules": "schedules"}


def _load_static() -> dict[str, tuple[bytes, str]]:
    folder = importlib.resources.files("fastapi_gcp_tasks.console") / "static"
    files: dict[str, tuple[bytes, str]] = {}
    for entry in folder.iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if suffix in _STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return files


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fastapi_gcp_tasks.console", "templates"),
        autoescape=True,  # every value is escaped: task arguments and headers are attacker-controlled text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    env.filters["pct"] = lambda value: f"{value * 100:.1f}%"
    env.filters["ms"] = lambda value: "" if value is None else f"{value:,.0f} ms"
    env.filters["q"] = lambda value: quote(str(value), safe="/")
    return env


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if value.tzinfo is not None else "")


def _pretty(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _encode_flash(kind: str, text: str) -> str:
    data = json.dumps({"k": kind, "t": text[:500]}).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _decode_flash(cookie: str | None) -> dict[str, str] | None:
    if not cookie:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, dict) or data.get("k") not in ("ok", "error") or not isinstance(data.get("t"), str):
        return None
    return {"kind": data["k"], "text": data["t"]}


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _cookie_path(request: Request) -> str:
    return _base(request) + "/"


def require_auth(auth: Callable[..., Any] | None, local_only: bool) -> None:
    """Refuse a console that anyone reaching the app could use: no `auth` dependency and not `local_only`."""
    if not isinstance(local_only, bool):
        raise ConsoleConfigError(f"local_only must be True or False, not {local_only!r}", param="local_only")
    if auth is None and not local_only:
        raise ConsoleConfigError(
            "the console needs auth=<a FastAPI dependency that raises HTTPException(401/403) for anyone not "
            "allowed>: it shows task arguments and can purge queues. Pass local_only=True instead to serve "
            "loopback clients only (development)",
            param="auth",
        )
    if auth is not None and not callable(auth):
        raise ConsoleConfigError(f"auth must be a FastAPI dependency (a callable), not {auth!r}", param="auth")


def console_app(
    backend: ConsoleBackend,
    *,
    auth: Callable[..., Any] | None = None,
    local_only: bool = False,
    title: str | None = None,
    poll_interval: float = 1.5,
) -> ASGIApp:
    """The console over `backend`, as an ASGI app to mount (`app.mount("/tasks-console", console_app(...))`).

    Args:
        backend: where every page's data comes from and every action goes (`ConsoleBackend`).
        auth: a FastAPI dependency (sync or async callable, may take `request: Request` and other
            dependencies) run before every request; it refuses by raising `HTTPException(401)` or `(403)`.
        local_only: serve only loopback clients under a loopback Host name (403 otherwise); the only way to
            run without `auth`.
        title: shown in the header and the page titles (default: the backend's `title`).
        poll_interval: seconds between the live-update script's polls.

    Raises:
        ConsoleConfigError: neither `auth` nor `local_only=True` (`param="auth"`), or a bad argument.
    """
    require_auth(auth, local_only)
    if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)) or poll_interval <= 0:
        raise ConsoleConfigError(
            f"poll_interval must be positive seconds, not {poll_interval!r}", param="poll_interval"
        )
    for attribute in ("title", "features", "change_token", "overview", "tasks", "task"):
        if not hasattr(backend, attribute):
            raise ConsoleConfigError(f"backend has no {attribute!r}: it is not a ConsoleBackend", param="backend")
    page_title = title if title is not None else backend.title
    features = frozenset(backend.features)
    env = _environment()
    static = _load_static()

    def only_local(request: Request) -> None:
        if not (is_loopback_client(request.scope) and is_loopback_host(request.headers.get("host"))):
            raise HTTPException(403, "this console serves local requests only (local_only=True)")

    guards: list[Any] = []
    if local_only:
        guards.append(Depends(only_local))
    if auth is not None:
        guards.append(Depends(auth))
    inner = FastAPI(dependencies=guards, openapi_url=None, docs_url=None, redoc_url=None, title=page_title)

    async def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        known = request.cookies.get(CSRF_COOKIE)
        fresh_csrf = known is None or not valid_csrf_token(known, known)  # kept while well-formed, never rotated
        csrf = new_csrf_token() if fresh_csrf or known is None else known
        flash = _decode_flash(request.cookies.get(_FLASH_COOKIE))
        body = env.get_template(template).render(
            base=_base(request),
            title=page_title,
            features=features,
            csrf=csrf,
            csrf_field=CSRF_FIELD,
            flash=flash,
            token=await backend.change_token(),
            poll_ms=int(poll_interval * 1000),
            nav=context.pop("nav", ""),
            **context,
        )
        response = HTMLResponse(body, status_code=status_code)
        if fresh_csrf:
            response.set_cookie(
                CSRF_COOKIE,
                csrf,
                path=_cookie_path(request),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
        if flash is not None or _FLASH_COOKIE in request.cookies:
            response.delete_cookie(_FLASH_COOKIE, path=_cookie_path(request))
        return response

    def needs(feature: str) -> None:
        if feature not in features:
            raise HTTPException(404, f"this console has no {feature.replace('_', ' ')}")

    @inner.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # The auth dependency's own headers (WWW-Authenticate) are kept; the body never echoes the request.
        text = exc.detail if isinstance(exc.detail, str) else "refused"
        if "text/html" in request.headers.get("accept", ""):
            body = env.get_template("error.html").render(title=page_title, status=exc.status_code, message=text)
            return HTMLResponse(body, status_code=exc.status_code, headers=exc.headers)
        return JSONResponse({"detail": text}, status_code=exc.status_code, headers=exc.headers)

    @inner.exception_handler(ConsoleActionError)
    async def backend_error(request: Request, exc: ConsoleActionError) -> Response:
        body = env.get_template("error.html").render(title=page_title, status=503, message=exc.message)
        return HTMLResponse(body, status_code=503)

    @inner.get("/", response_class=HTMLResponse)
    async def overview_page(request: Request) -> Response:
        overview = await backend.overview()
        total, per_endpoint = throughput_charts(overview.chart)
        charts = {chart.endpoint: chart for chart in per_endpoint}
        return await render(request, "overview.html", nav="overview", overview=overview, total=total, charts=charts)

    @inner.get("/queues", response_class=HTMLResponse)
    async def queues_page(request: Request) -> Response:
        return await render(request, "queues.html", nav="queues", queues=await backend.queues())

    @inner.get("/queues/purge", response_class=HTMLResponse)
    async def purge_confirm_page(request: Request, queue: str) -> Response:
        known = {view.name: view for view in await backend.queues()}
        if queue not in known:
            raise HTTPException(404, "no such queue")
        return await render(request, "confirm_purge.html", nav="queues", queue=known[queue])

    @inner.get("/tasks", response_class=HTMLResponse)
    async def tasks_page(
        request: Request,
        queue: str | None = None,
        endpoint: str | None = None,
        status: str | None = None,
        search: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Response:
        limit = min(max(limit, 1), 200)
        filters = {"queue": queue or None, "endpoint": endpoint or None, "status": status or None}
        if filters["status"] is not None and filters["status"] not in TASK_STATUSES:
            raise HTTPException(400, "unknown status")
        page = await backend.tasks(**filters, search=search or None, cursor=cursor or None, limit=limit)
        kept = {k: v for k, v in {**filters, "search": search or None}.items() if v}
        next_url = None
        if page.next_cursor:
            next_url = "?" + urlencode(
                {**kept, "cursor": page.next_cursor, **({"limit": limit} if limit != 50 else {})}
            )
        first_url = "?" + urlencode(kept) if cursor else None
        return await render(
            request,
            "tasks.html",
            nav="tasks",
            page=page,
            filters=filters,
            search=search or "",
            statuses=TASK_STATUSES,
            next_url=next_url,
            first_url=first_url,
        )

    @inner.get("/tasks/{name:path}", response_class=HTMLResponse)
    async def task_page(request: Request, name: str) -> Response:
        detail = await backend.task(name)
        if detail is None:  # a page, not a bare 404: the flash of a delete that removed it shows here
            return await render(request, "task_gone.html", status_code=404, nav="tasks", name=name)
        return await render(request, "task.html", nav="tasks", task=detail)

    @inner.get("/dead-letters", response_class=HTMLResponse)
    async def letters_page(request: Request, cursor: str | None = None) -> Response:
        needs("dead_letters")
        page = await backend.dead_letters(cursor=cursor or None, limit=50)
        next_url = "?" + urlencode({"cursor": page.next_cursor}) if page.next_cursor else None
        return await render(request, "letters.html", nav="dead-letters", page=page, next_url=next_url, first=cursor)

    @inner.get("/schedules", response_class=HTMLResponse)
    async def schedules_page(request: Request) -> Response:
        needs("schedules")
        return await render(request, "schedules.html", nav="schedules", jobs=await backend.schedules())

    @inner.get("/_live")
    async def live(token: str = "") -> Response:
        current = await backend.change_token()
        return JSONResponse({"token": current, "changed": current != token})

    @inner.get("/_static/{name}")
    async def static_file(name: str) -> Response:
        found = static.get(name)
        if found is None:
            raise HTTPException(404, "no such file")
        return Response(found[0], media_type=found[1], headers={"cache-control": "no-cache"})

    @inner.post("/actions/{kind}")
    async def action(request: Request, kind: str) -> Response:
        reason = cross_site_reason(request.headers)
        if reason is not None:
            logger.warning("console refused a cross-site POST to %s: %s", request.url.path, reason)
            raise HTTPException(403, "cross-site request refused")
        form = await _read_form(request)
        if not valid_csrf_token(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        verb = form.get("action", "")
        if kind not in _ACTIONS or verb not in _ACTIONS[kind]:
            raise HTTPException(400, "unknown action")
        base = _base(request)
        target = form.get("target", "")
        back, run = _dispatch(backend, features, kind, verb, target, form, base)
        if run is None:  # purge without its confirmation: show the confirmation step, act on nothing
            return RedirectResponse(back, status_code=303)
        try:
            flash = ("ok", await run())
        except ConsoleActionError as exc:
            flash = ("error", exc.message)
        response = RedirectResponse(back, status_code=303)
        response.set_cookie(
            _FLASH_COOKIE,
            _encode_flash(*flash),
            path=_cookie_path(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    return SecurityHeaders(inner)


async def _read_form(request: Request) -> dict[str, str]:
    """The urlencoded form of an action POST (first value of each field); no multipart, no size beyond 64 KiB."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(415, "actions are urlencoded forms")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "malformed form") from exc
    return {key: values[0] for key, values in fields.items()}


def _dispatch(
    backend: ConsoleBackend,
    features: frozenset[str],
    kind: str,
    verb: str,
    target: str,
    form: Mapping[str, str],
    base: str,
) -> tuple[str, Callable[[], Awaitable[str]] | None]:
    """Where to go after the action, and the call that performs it (None: nothing to do yet)."""
    if kind == "queue":
        queue_verb: Literal["pause", "resume", "purge"] = verb  # type: ignore[assignment]
        if verb == "purge" and form.get("confirm") != "yes":
            return f"{base}/queues/purge?{urlencode({'queue': target})}", None
        return f"{base}/queues", lambda: backend.queue_action(target, queue_verb)
    if kind == "task":
        task_verb: Literal["run", "delete", "replay"] = verb  # type: ignore[assignment]
        if verb == "replay" and "replay" not in features:
            raise HTTPException(404, "this console cannot replay")
        return f"{base}/tasks/{quote(target, safe='/')}", lambda: backend.task_action(target, task_verb)
    if kind == "letter":
        letter_verb: Literal["replay", "discard"] = verb  # type: ignore[assignment]
        if "dead_letters" not in features or (verb == "replay" and "replay" not in features):
            raise HTTPException(404, "this console cannot do that to dead letters")
        return f"{base}/dead-letters", lambda: backend.letter_action(target, letter_verb)
    if kind == "job":
        job_verb: Literal["pause", "resume", "run"] = verb  # type: ignore[assignment]
        if "schedules" not in features:
            raise HTTPException(404, "this console has no schedules")
        return f"{base}/schedules", lambda: backend.job_action(target, job_verb)
    if "clock" not in features:
        raise HTTPException(404, "this console has no manual clock")
    try:
        seconds = float(form.get("seconds", ""))
    except ValueError as exc:
        raise HTTPException(400, "seconds must be a number") from exc
    if not 0 < seconds <= 366 * 86400:
        raise HTTPException(400, "seconds must be positive and at most a year")
    return f"{base}/", lambda: backend.advance_clock(seconds)
