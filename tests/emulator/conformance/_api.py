"""One adapter over the official clients of every transport, so that one scenario runs through all of them.

`Api.tasks` and `Api.scheduler` call the official Cloud Tasks and Cloud Scheduler clients of one transport
(`grpc-sync`, `grpc-async`, `rest-sync`) and return plain results: the coroutines of the async clients are
run to completion on a loop the adapter owns, pagers are read with `Api.items`, operations with
`Api.operation_result`. Errors stay the clients' own `google.api_core` exceptions; `expect_status` reads the
canonical status code from them whatever the transport (REST answers carry it in the JSON error body).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from google.api_core import exceptions
from google.rpc import code_pb2  # type: ignore[import-untyped, unused-ignore]

from fastapi_gcp_tasks.emulator import Emulator

TRANSPORTS = ("grpc-sync", "grpc-async", "rest-sync")


class _Calls:
    """Every method of one official client, called synchronously."""

    def __init__(self, api: Api, client: Any) -> None:
        self._api = api
        self._client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._api.run(method(*args, **kwargs))

        return call


class Api:
    """The Cloud Tasks and Cloud Scheduler clients of `transport` for `emu`, driven synchronously."""

    def __init__(self, transport: str, emu: Emulator) -> None:
        self.transport = transport
        self.emu = emu
        self._runner: asyncio.Runner | None = None
        if transport == "grpc-async":
            self._runner = asyncio.Runner()
            tasks, scheduler = self._runner.run(self._async_clients())
        elif transport == "grpc-sync":
            tasks, scheduler = emu.tasks_client(), emu.scheduler_client()
        else:
            tasks = emu.tasks_client(transport="rest")  # type: ignore[call-arg, unused-ignore]
            scheduler = emu.scheduler_client(transport="rest")  # type: ignore[call-arg, unused-ignore]
        self._clients = (tasks, scheduler)
        self.tasks = _Calls(self, tasks)
        self.scheduler = _Calls(self, scheduler)

    async def _async_clients(self) -> tuple[Any, Any]:
        return self.emu.async_tasks_client(), self.emu.async_scheduler_client()

    def run(self, value: Any) -> Any:
        """`value`, awaited on the adapter's loop when it is awaitable (the async clients' calls)."""
        if inspect.isawaitable(value):
            assert self._runner is not None

            async def wait() -> Any:
                return await value

            return self._runner.run(wait())
        return value

    def items(self, pager: Any) -> list[Any]:
        """Every item of a list call's pager, following its page tokens (sync or async pager)."""
        if hasattr(pager, "__aiter__"):

            async def collect() -> list[Any]:
                return [item async for item in pager]

            return list(self.run(collect()))
        return list(pager)

    def operation_result(self, operation: Any) -> Any:
        """The response of a long-running operation (sync `Operation` or `AsyncOperation`)."""
        return self.run(operation.result())

    def close(self) -> None:
        """Close what the adapter opened (the emulator closes its own sync clients)."""
        if self._runner is not None:
            for client in self._clients:
                self._runner.run(client.transport.close())
            self._runner.close()


def status_of(error: exceptions.GoogleAPICallError) -> str:
    """The canonical status name of an error from either transport (`NOT_FOUND`, `FAILED_PRECONDITION`, ...)."""
    response = getattr(error, "response", None)
    if response is not None and hasattr(response, "json"):
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            status = response.json()["error"]["status"]
            if isinstance(status, str):
                return status
    code = error.grpc_status_code
    if code is not None:
        return str(code.name)
    for detail in error.errors:  # an operation's error: its google.rpc.Status
        if isinstance(getattr(detail, "code", None), int):
            return str(code_pb2.Code.Name(detail.code))
    return type(error).__name__


@contextlib.contextmanager
def expect_status(status: str, match: str = "") -> Iterator[None]:
    """The block must fail with the canonical status `status`, and a message matching `match`."""
    with pytest.raises(exceptions.GoogleAPICallError) as caught:
        yield
    error = caught.value
    assert status_of(error) == status, f"expected {status}, got {status_of(error)}: {error}"
    assert re.search(match, str(error)), f"{match!r} not in {error}"
