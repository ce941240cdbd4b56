"""`TraceContextMiddleware`: the worker continues the trace of the code that called `.delay()`.

The context is adopted before routing, so before authentication: see docs/worker.md for why that is safe
for what this middleware does with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_gcp_tasks._limits import ID_PATTERN, QUEUE_ID_PATTERN
from fastapi_gcp_tasks.build._tracing import otel_modules
from fastapi_gcp_tasks.receive import _headers as h

__all__ = ["TraceContextMiddleware"]


class TraceContextMiddleware:
    """Pure ASGI middleware: run each request in the trace context found in its headers.

    The handler's spans (and the server span this middleware starts, unless `start_span=False`)
    become children of the span that called `.delay()`, and its baggage is available. When a span is
    already current, for example because OpenTelemetry's own ASGI/FastAPI instrumentation wraps the
    app and has extracted the context itself, the request passes through untouched.

    `tracer_provider` is the OpenTelemetry `TracerProvider` for the server span; the global one by default.
    """

    def __init__(self, app: ASGIApp, *, start_span: bool = True, tracer_provider: Any = None) -> None:
        self.app = app
        self.start_span = start_span
        self.tracer_provider = tracer_provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        otel = otel_modules() if scope["type"] == "http" else None
        if otel is None:
            await self.app(scope, receive, send)
            return
        context, trace, _, propagate = otel
        if trace.get_current_span().get_span_context().is_valid:
            await self.app(scope, receive, send)
            return
        headers = _header_map(scope)
        token = context.attach(propagate.extract(headers))
        try:
            if not self.start_span:
                await self.app(scope, receive, send)
                return
            await self._traced(scope, receive, send, trace, headers)
        finally:
            context.detach(token)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, trace: Any, headers: Mapping[str, str]) -> None:
        tracer = trace.get_tracer("fastapi_gcp_tasks", tracer_provider=self.tracer_provider)
        method = scope.get("method", "")
        path = scope.get("path", "")
        attributes: dict[str, str | int] = {"http.request.method": method, "url.path": path}
        # Labels, not identity: read before authentication, so only values shaped like Google's ids are kept.
        for key, header, pattern in (
            ("gcp.cloud_tasks.queue", h.QUEUE_NAME, QUEUE_ID_PATTERN),
            ("gcp.cloud_tasks.task", h.TASK_NAME, ID_PATTERN),
        ):
            value = h.text(headers.get(header))
            if value is not None and pattern.fullmatch(value):
                attributes[key] = value
        retry_count = h.integer(headers.get(h.RETRY_COUNT))
        if retry_count is not None:
            attributes["gcp.cloud_tasks.retry_count"] = retry_count
        with tracer.start_as_current_span(
            f"{method} {path}", kind=trace.SpanKind.SERVER, attributes=attributes
        ) as span:

            async def send_with_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, send_with_status)


def _header_map(scope: Scope) -> dict[str, str]:
    """The request headers, lower-cased; repeated headers are joined with commas as HTTP allows."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers
