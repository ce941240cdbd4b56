"""Trace propagation with the OpenTelemetry SDK and an in-memory exporter."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from fastapi import FastAPI, Request
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastapi_gcp_tasks.build import _tracing
from fastapi_gcp_tasks.build._tracing import propagation_headers
from fastapi_gcp_tasks.receive import TraceContextMiddleware

from ._support import client_for


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def test_nothing_to_carry_without_a_span() -> None:
    assert propagation_headers() == {}


def test_headers_carry_the_current_span_and_baggage(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("enqueue") as span:
        headers = propagation_headers()
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with_baggage = propagation_headers()
        finally:
            context.detach(token)
    trace_id = format(span.get_span_context().trace_id, "032x")
    span_id = format(span.get_span_context().span_id, "016x")
    flags = format(span.get_span_context().trace_flags, "02x")
    assert headers == {"traceparent": f"00-{trace_id}-{span_id}-{flags}"}
    assert with_baggage["baggage"] == "tenant=acme"
    assert propagation_headers() == {}


def test_baggage_alone_is_carried() -> None:
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        assert propagation_headers() == {"baggage": "tenant=acme"}
    finally:
        context.detach(token)


def test_costs_one_lookup_while_opentelemetry_is_not_imported(
    provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tracing, "_otel", None)
    monkeypatch.delitem(sys.modules, "opentelemetry.context")
    with provider.get_tracer("test").start_as_current_span("enqueue"):
        assert propagation_headers() == {}
    assert _tracing._otel is None


async def test_fastapi_native_telemetry_continues_the_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """FastAPI >= 0.165 extracts the context itself; `TraceContextMiddleware` then steps aside."""
    with provider.get_tracer("sender").start_as_current_span("enqueue") as sender:
        headers = propagation_headers()
    app = FastAPI(telemetry={"tracer_provider": provider, "metrics": False, "logs": False})
    tracer = provider.get_tracer("worker")

    @app.post("/tasks/report")
    async def report() -> None:
        with tracer.start_as_current_span("build report"):
            pass

    app.add_middleware(TraceContextMiddleware, tracer_provider=provider)
    async with client_for(app) as client:
        assert (await client.post("/tasks/report", headers=headers)).status_code == 200
    spans = exporter.get_finished_spans()
    assert {span.context.trace_id for span in spans} == {sender.get_span_context().trace_id}
    scopes = {span.name: span.instrumentation_scope.name for span in spans if span.instrumentation_scope}
    assert "fastapi_gcp_tasks" not in scopes.values()
    assert scopes["POST /tasks/report"] == "fastapi"
    [server] = [span for span in spans if span.name == "POST /tasks/report"]
    assert server.parent is not None
    assert server.parent.span_id == sender.get_span_context().span_id


def make_worker(provider: TracerProvider, *, start_span: bool = True) -> FastAPI:
    app = FastAPI()
    tracer = provider.get_tracer("worker")

    @app.post("/tasks/report")
    async def report(request: Request) -> dict[str, str | None]:
        with tracer.start_as_current_span("build report"):
            return {"tenant": str(baggage.get_baggage("tenant"))}

    app.add_middleware(TraceContextMiddleware, start_span=start_span, tracer_provider=provider)
    return app


async def test_worker_continues_the_senders_trace(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    tracer = provider.get_tracer("sender")
    with tracer.start_as_current_span("enqueue") as sender:
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        headers = propagation_headers()
        context.detach(token)
    headers |= {"X-CloudTasks-QueueName": "reports", "X-CloudTasks-TaskName": "r1", "X-CloudTasks-TaskRetryCount": "2"}
    async with client_for(make_worker(provider)) as client:
        response = await client.post("/tasks/report", headers=headers)
    assert response.json() == {"tenant": "acme"}
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server, handler = spans["POST /tasks/report"], spans["build report"]
    sender_context = sender.get_span_context()
    assert server.context.trace_id == sender_context.trace_id
    assert server.parent is not None
    assert server.parent.span_id == sender_context.span_id
    assert server.kind is trace.SpanKind.SERVER
    assert handler.parent is not None
    assert handler.parent.span_id == server.context.span_id
    assert server.attributes is not None
    assert server.attributes["gcp.cloud_tasks.task"] == "r1"
    assert server.attributes["gcp.cloud_tasks.retry_count"] == 2
    assert server.attributes["http.response.status_code"] == 200
    assert context.get_current() == context.Context() or not trace.get_current_span().get_span_context().is_valid


async def test_without_a_server_span(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    with provider.get_tracer("sender").start_as_current_span("enqueue") as sender:
        headers = propagation_headers()
    async with client_for(make_worker(provider, start_span=False)) as client:
        await client.post("/tasks/report", headers=headers)
    [handler] = [span for span in exporter.get_finished_spans() if span.name == "build report"]
    assert handler.parent is not None
    assert handler.parent.span_id == sender.get_span_context().span_id


async def test_a_request_without_trace_headers_starts_a_new_trace(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with client_for(make_worker(provider)) as client:
        await client.post("/tasks/report")
    server = next(span for span in exporter.get_finished_spans() if span.name == "POST /tasks/report")
    assert server.parent is None


async def test_server_errors_mark_the_span(provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    app = FastAPI()

    @app.post("/fail")
    async def fail() -> None:
        from fastapi import HTTPException

        raise HTTPException(503, "later")

    app.add_middleware(TraceContextMiddleware, tracer_provider=provider)
    async with client_for(app) as client:
        assert (await client.post("/fail")).status_code == 503
    [server] = exporter.get_finished_spans()
    assert server.status.status_code is trace.StatusCode.ERROR


async def test_passes_through_when_a_span_is_already_current(
    provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    app = make_worker(provider)
    with provider.get_tracer("outer").start_as_current_span("instrumented server") as outer:
        async with client_for(app) as client:
            await client.post("/tasks/report")
    names = [span.name for span in exporter.get_finished_spans()]
    assert "POST /tasks/report" not in names
    handler = next(span for span in exporter.get_finished_spans() if span.name == "build report")
    assert handler.parent is not None
    assert handler.parent.span_id == outer.get_span_context().span_id
