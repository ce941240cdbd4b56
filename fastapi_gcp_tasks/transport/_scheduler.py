"""The two runners of Cloud Scheduler flows: the only code that calls a Cloud Scheduler client.

`run_flow` calls the sync client, `run_flow_async` awaits the async one; everything else (what to
read, what a `NotFound` means, what to write next) is decided once, by the flow (see `_flows`). An
error the flow lets through is translated with `translate`, described by the call that failed.
"""

from __future__ import annotations

from typing import TypeVar

from google.cloud import scheduler_v1

from fastapi_gcp_tasks.transport._errors import translate
from fastapi_gcp_tasks.transport._flows import Flow, SchedulerCall

__all__ = ["run_flow", "run_flow_async"]

T = TypeVar("T")


def run_flow(flow: Flow[T], client: scheduler_v1.CloudSchedulerClient, *, timeout: float) -> T:
    """Drive `flow` to its result with the sync client, each call limited to `timeout` seconds."""
    call: SchedulerCall | None = None
    try:
        call = next(flow)
        while True:
            try:
                result = getattr(client, call.rpc)(**call.arguments(), timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides; the rest is translated below
                call = flow.throw(exc)
            else:
                call = flow.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        translated = _translated(exc, call)
        if translated is exc:
            raise
        raise translated from exc


async def run_flow_async(flow: Flow[T], client: scheduler_v1.CloudSchedulerAsyncClient, *, timeout: float) -> T:
    """`run_flow` with the async client."""
    call: SchedulerCall | None = None
    try:
        call = next(flow)
        while True:
            try:
                result = await getattr(client, call.rpc)(**call.arguments(), timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - thrown into the flow, which decides; the rest is translated below
                call = flow.throw(exc)
            else:
                call = flow.send(result)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    except Exception as exc:
        translated = _translated(exc, call)
        if translated is exc:
            raise
        raise translated from exc


def _translated(exc: Exception, call: SchedulerCall | None) -> Exception:
    return translate(exc, what=call.what if call is not None else "calling Cloud Scheduler")
