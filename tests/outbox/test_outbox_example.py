"""examples/outbox runs on the emulator: committed orders get their receipt, a refused one creates no task."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from fastapi_gcp_tasks.emulator import Emulator
from tests.outbox.support import eventually

QUEUE = "projects/demo/locations/local/queues/receipts"


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Emulator]]:
    holder: dict[str, Any] = {}

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    with Emulator(deliver_to=asgi, queues=[QUEUE]) as emulator:
        monkeypatch.setenv("FASTAPI_GCP_TASKS_EMULATOR_HOST", emulator.address)
        monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'example.db'}")
        monkeypatch.setenv("EXAMPLE_BASE_URL", "http://example")
        sys.modules.pop("examples.outbox.app", None)
        module = importlib.import_module("examples.outbox.app")
        holder["app"] = module.app
        try:
            yield module, emulator
        finally:
            module.engine.dispose()
            sys.modules.pop("examples.outbox.app", None)


async def test_example_app(example: tuple[ModuleType, Emulator]) -> None:
    module, emulator = example
    app = module.app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
            assert (await client.post("/orders", params={"sku": "tea", "quantity": 2})).status_code == 200
            assert (await client.post("/orders", params={"sku": "tea", "quantity": 99})).status_code == 409
            assert (await client.post("/orders", params={"sku": "cake", "quantity": 1})).status_code == 200
            unique: dict[str, str | int] = {"sku": "pie", "quantity": 1, "reference": "A1"}
            assert (await client.post("/orders", params=unique)).status_code == 200
            duplicate = await client.post("/orders", params=unique)
            assert duplicate.status_code == 409, duplicate.text

            async def receipts() -> list[bool]:
                return [o["receipt_sent"] for o in (await client.get("/orders")).json()]

            state: list[bool] = []

            def done() -> bool:
                return state == [True, True, True]

            for _ in range(200):
                state = await receipts()
                if done():
                    break
                await emulator.wait_until_idle_async(timeout=1)
            await eventually(done, timeout=0.1, message=f"receipts {state}")
    assert len(emulator.deliveries) == 3
    assert all(d.status == 200 for d in emulator.deliveries)
