"""Trace propagation through Cloud Tasks, when OpenTelemetry is in use: the sending side.

`propagation_headers()` returns the headers (W3C `traceparent`, `tracestate`, `baggage` with the default
propagators) that carry the caller's trace into the task. On the worker, `receive.TraceContextMiddleware`
makes the handler continue that trace.

OpenTelemetry stays optional. Nothing here imports it: while the application has not imported
`opentelemetry.context` itself there can be no active span, so both sides do nothing, at the cost of
one dictionary lookup.
"""

from __future__ import annotations

import sys
from types import ModuleType

__all__ = ["otel_modules", "propagation_headers"]

_otel: tuple[ModuleType, ModuleType, ModuleType, ModuleType] | None = None


def otel_modules() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType] | None:
    """`(context, trace, baggage, propagate)` once the application uses OpenTelemetry, else None."""
    global _otel
    if _otel is None and "opentelemetry.context" in sys.modules:
        from opentelemetry import baggage, context, propagate, trace

        _otel = (context, trace, baggage, propagate)
    return _otel


def propagation_headers() -> dict[str, str]:
    """The trace-context headers for the current OpenTelemetry context, or `{}` when there is nothing to carry.

    Uses the globally configured propagator (`OTEL_PROPAGATORS`; W3C trace context and baggage by
    default), so the worker side can read them with the same configuration.
    """
    otel = otel_modules()
    if otel is None:
        return {}
    context, trace, baggage, propagate = otel
    current = context.get_current()
    if not trace.get_current_span(current).get_span_context().is_valid and not baggage.get_all(current):
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=current)
    return carrier
