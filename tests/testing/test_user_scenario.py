"""The three tests a new user writes for the small app of docs/testing.md, with the plugin alone (issue 16).

Each pair of tests runs in file order and fails on the second test without the plugin's guarantees: the
function-scoped emulator is new for each test (the default client must follow it), the shared emulator is
reset between tests (builders must create their queue again), and a buffered request's task is created after
its response (the wait must cover it). The app is served by uvicorn over real HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from fastapi_gcp_tasks.emulator import Emulator
from fastapi_gcp_tasks.testing import assert_task_created, wait_for_tasks, wait_for_tasks_async
from tests._support import listening_socket, serve_asgi
from tests._support.ports import url_of

from ._shop import Shop, make_shop


def _served(buffered: bool) -> Iterator[tuple[Shop, str]]:
    sock = listening_socket()
    base_url = url_of(sock)
    shop = make_shop(base_url, buffered=buffered)
    with serve_asgi(shop.app, sock) as url:
        yield shop, url


@pytest.fixture(scope="module")
def shop() -> Iterator[tuple[Shop, str]]:
    yield from _served(buffered=False)


@pytest.fixture(scope="module")
def buffered_shop() -> Iterator[tuple[Shop, str]]:
    yield from _served(buffered=True)


@pytest.mark.parametrize("order_id", [1, 2])
def test_each_test_gets_its_own_emulator_and_the_app_sends_to_it(
    gcp_tasks_emulator: Emulator, shop: tuple[Shop, str], order_id: int
) -> None:
    app, url = shop
    response = httpx.post(f"{url}/order/{order_id}", params={"email": "ada@example.com"})
    assert response.status_code == 200, response.text
    wait_for_tasks(gcp_tasks_emulator)
    assert [record.status for record in gcp_tasks_emulator.deliveries] == [200]
    assert (order_id, "ada@example.com") in app.receipts
    assert_task_created(gcp_tasks_emulator, app.send_receipt, order_id=order_id, email="ada@example.com")


@pytest.mark.parametrize("order_id", [3, 4])
def test_the_session_emulator_is_reset_and_the_builder_creates_its_queue_again(
    gcp_tasks_emulator_session: Emulator, shop: tuple[Shop, str], order_id: int
) -> None:
    gcp_tasks_emulator_session.reset()
    _, url = shop
    response = httpx.post(f"{url}/order/{order_id}", params={"email": "bob@example.com"})
    assert response.status_code == 200, response.text  # not NOT_FOUND: the builder forgot the dropped queue
    wait_for_tasks(gcp_tasks_emulator_session)
    assert [record.status for record in gcp_tasks_emulator_session.deliveries] == [200]


@pytest.mark.parametrize("order_id", [5, 6])
async def test_the_shared_fixture_resets_for_each_async_test(
    gcp_tasks_shared_emulator: Emulator, shop: tuple[Shop, str], order_id: int
) -> None:
    app, url = shop
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/order/{order_id}", params={"email": "eve@example.com"})
    assert response.status_code == 200, response.text
    await wait_for_tasks_async(gcp_tasks_shared_emulator)
    assert [record.status for record in gcp_tasks_shared_emulator.deliveries] == [200]
    assert_task_created(gcp_tasks_shared_emulator, app.send_receipt, order_id=order_id)


@pytest.mark.parametrize("email", ["cy@example.com", "di@example.com"])
def test_a_buffered_task_created_after_the_response_is_waited_for(
    gcp_tasks_shared_emulator: Emulator, buffered_shop: tuple[Shop, str], email: str
) -> None:
    app, url = buffered_shop
    response = httpx.post(f"{url}/signup", params={"email": email})
    assert response.status_code == 200, response.text
    wait_for_tasks(gcp_tasks_shared_emulator)
    assert app.welcomes[-1] == email
    assert [record.status for record in gcp_tasks_shared_emulator.deliveries] == [200]
    assert_task_created(gcp_tasks_shared_emulator, app.send_welcome, email=email)
