"""examples/outbox runs on the emulator: committed orders get their receipt, a refused one creates no task."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.testing import created_tasks, wait_for_tasks
from tests._support import listening_socket, serve_asgi, wait_for
from tests._support.ports import url_of


@pytest.fixture
def example(
    gcp_tasks_emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, str]]:
    sock = listening_socket()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'example.db'}")
    monkeypatch.setenv("EXAMPLE_BASE_URL", url_of(sock))
    sys.modules.pop("examples.outbox.app", None)
    module = importlib.import_module("examples.outbox.app")
    try:
        with serve_asgi(module.app, sock, lifespan="on") as url:
            yield module, url
    finally:
        module.engine.dispose()
        sys.modules.pop("examples.outbox.app", None)


def test_example_app(example: tuple[ModuleType, str], gcp_tasks_emulator: Emulator) -> None:
    module, url = example
    with httpx.Client(base_url=url) as client:
        assert client.post("/orders", params={"sku": "tea", "quantity": 2}).status_code == 200
        assert client.post("/orders", params={"sku": "tea", "quantity": 99}).status_code == 409
        assert client.post("/orders", params={"sku": "cake", "quantity": 1}).status_code == 200
        unique: dict[str, str | int] = {"sku": "pie", "quantity": 1, "reference": "A1"}
        assert client.post("/orders", params=unique).status_code == 200
        duplicate = client.post("/orders", params=unique)
        assert duplicate.status_code == 409, duplicate.text

        def receipts() -> list[bool]:
            return [order["receipt_sent"] for order in client.get("/orders").json()]

        # The relay creates the committed tasks on its own schedule: wait for their effect, then for the emulator.
        wait_for(lambda: receipts() == [True, True, True], lambda: f"three receipts sent, saw {receipts()}")
    wait_for_tasks(gcp_tasks_emulator)
    assert [delivery.status for delivery in gcp_tasks_emulator.deliveries] == [200, 200, 200]
    assert sorted(task.arguments["order_id"] for task in created_tasks(gcp_tasks_emulator, module.send_receipt)) == [
        1,
        2,
        3,
    ]
