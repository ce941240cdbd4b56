"""The console app over an in-memory backend: every page, the live endpoint, actions, paging and escaping."""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI

from fastapi_gcp_tasks.console import console_app
from fastapi_gcp_tasks.console._security import SECURITY_HEADERS
from tests.console._client import csrf_of, local_client
from tests.console._fake import HOSTILE, QUEUE, FakeBackend

PAGES = [
    "/",
    "/tasks",
    "/tasks?status=failed&endpoint=/tasks/x",
    f"/tasks/{QUEUE}/tasks/t99999",
    f"/tasks/{QUEUE}/tasks/t00001",
    "/queues",
    f"/queues/purge?queue={QUEUE}",
    "/dead-letters",
    "/schedules",
]


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_renders_with_the_security_headers(backend: FakeBackend, path: str) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert response.headers["cache-control"] == "no-store"
    assert "<script>" not in response.text.replace('<script src="/_static/console.js" defer></script>', "")
    assert 'id="live"' in response.text


async def test_overview_shows_counts_chart_and_schedules(backend: FakeBackend) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        html = (await client.get("/")).text
    assert "<svg" in html
    assert html.count('fill="#c0392b"') > 0  # failed segments are drawn
    assert "Outbox backlog" in html
    assert ">7<" in html
    assert "app-nightly" in html
    assert "/tasks?endpoint=/tasks/send/%7Buser_id%7D" in html or "/tasks?endpoint=%2Ftasks" in html


async def test_hostile_arguments_headers_and_errors_are_rendered_inert(backend: FakeBackend) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        html = (await client.get(f"/tasks/{QUEUE}/tasks/t99999")).text
        listing = (await client.get("/tasks")).text
    for page in (html, listing):
        assert HOSTILE not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in html
    assert "onerror=alert(1)&gt;" in html


async def test_unknown_task_is_404_and_unknown_status_400(backend: FakeBackend) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        assert (await client.get(f"/tasks/{QUEUE}/tasks/nope")).status_code == 404
        assert (await client.get("/tasks?status=evil")).status_code == 400
        assert (await client.get("/_static/../_app.py")).status_code == 404
        assert (await client.get("/_static/nope.js")).status_code == 404


async def test_paging_follows_the_cursor_to_the_last_page(backend: FakeBackend) -> None:
    seen: list[str] = []
    async with local_client(console_app(backend, local_only=True)) as client:
        url = "/tasks?status=succeeded"
        pages = 0
        while url:
            html = (await client.get(url)).text
            pages += 1
            seen += re.findall(r'title="(projects/[^"]+)">', html)
            found = re.search(r'rel="next" href="([^"]+)"', html)
            url = found.group(1).replace("&amp;", "&") if found else ""
    expected = [view.name for view in backend.task_views if view.status == "succeeded"]
    assert pages == 2
    assert seen == expected


async def test_live_reports_a_changed_token(backend: FakeBackend) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        first = (await client.get("/_live?token=")).json()
        assert first["changed"] is True
        assert (await client.get(f"/_live?token={first['token']}")).json() == {
            "token": first["token"],
            "changed": False,
        }
        backend.version += 1
        assert (await client.get(f"/_live?token={first['token']}")).json()["changed"] is True


async def test_static_files_are_served_from_the_package(backend: FakeBackend) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        script = await client.get("/_static/console.js")
        style = await client.get("/_static/console.css")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "data-live" in script.text
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")


async def test_an_action_runs_and_flashes_once(backend: FakeBackend) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        token = csrf_of((await client.get("/queues")).text)
        response = await client.post(
            "/actions/queue",
            data={"csrf_token": token, "target": QUEUE, "action": "pause"},
            headers={"origin": "http://127.0.0.1", "sec-fetch-site": "same-origin"},
            follow_redirects=False,
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/queues"
        assert backend.actions == [("queue", QUEUE, "pause")]
        page = (await client.get("/queues")).text
        assert f"pause {QUEUE}: done" in page
        assert f"pause {QUEUE}: done" not in (await client.get("/queues")).text


async def test_a_failed_action_is_a_flash_not_a_500(backend: FakeBackend) -> None:
    backend.fail_next = "the service said <no>"
    async with local_client(console_app(backend, local_only=True)) as client:
        token = csrf_of((await client.get("/schedules")).text)
        response = await client.post(
            "/actions/job", data={"csrf_token": token, "target": "app-nightly", "action": "run"}, follow_redirects=True
        )
    assert response.status_code == 200
    assert "flash-error" in response.text
    assert "the service said &lt;no&gt;" in response.text
    assert backend.actions == []


async def test_purge_needs_its_confirmation_step(backend: FakeBackend) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        token = csrf_of((await client.get("/queues")).text)
        response = await client.post(
            "/actions/queue", data={"csrf_token": token, "target": QUEUE, "action": "purge"}, follow_redirects=False
        )
        assert response.status_code == 303
        assert response.headers["location"].startswith("/queues/purge?queue=")
        assert backend.actions == []
        confirm = (await client.get(response.headers["location"])).text
        assert 'name="confirm" value="yes"' in confirm
        await client.post(
            "/actions/queue",
            data={"csrf_token": csrf_of(confirm), "target": QUEUE, "action": "purge", "confirm": "yes"},
        )
    assert backend.actions == [("queue", QUEUE, "purge")]


@pytest.mark.parametrize(
    ("kind", "target", "verb", "extra"),
    [
        ("task", f"{QUEUE}/tasks/t99999", "run", {}),
        ("task", f"{QUEUE}/tasks/t99999", "delete", {}),
        ("task", f"{QUEUE}/tasks/t99999", "replay", {}),
        ("letter", "1", "replay", {}),
        ("letter", "1", "discard", {}),
        ("job", "app-nightly", "pause", {}),
        ("job", "app-nightly", "resume", {}),
        ("queue", QUEUE, "resume", {}),
        ("clock", "clock", "advance", {"seconds": "60"}),
    ],
)
async def test_every_action_reaches_the_backend(
    backend: FakeBackend, kind: str, target: str, verb: str, extra: dict[str, str]
) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        token = csrf_of((await client.get("/")).text)
        response = await client.post(
            f"/actions/{kind}", data={"csrf_token": token, "target": target, "action": verb, **extra}
        )
    assert response.status_code == 200
    expected_target = "60.0" if kind == "clock" else target
    assert backend.actions == [(kind, expected_target, verb)]


@pytest.mark.parametrize(
    ("kind", "verb", "extra", "status"),
    [
        ("queue", "explode", {}, 400),
        ("nothing", "pause", {}, 400),
        ("clock", "advance", {"seconds": "-5"}, 400),
        ("clock", "advance", {"seconds": "soon"}, 400),
    ],
)
async def test_unknown_actions_are_refused(
    backend: FakeBackend, kind: str, verb: str, extra: dict[str, str], status: int
) -> None:
    async with local_client(console_app(backend, local_only=True)) as client:
        token = csrf_of((await client.get("/")).text)
        response = await client.post(
            f"/actions/{kind}", data={"csrf_token": token, "target": "x", "action": verb, **extra}
        )
    assert response.status_code == status
    assert backend.actions == []


async def test_pages_and_buttons_follow_the_features() -> None:
    backend = FakeBackend(features=frozenset({"history"}))
    async with local_client(console_app(backend, local_only=True)) as client:
        overview = (await client.get("/")).text
        assert "/dead-letters" not in overview.split("</nav>")[0]
        assert (await client.get("/dead-letters")).status_code == 404
        assert (await client.get("/schedules")).status_code == 404
        task = (await client.get(f"/tasks/{QUEUE}/tasks/t99999")).text
        assert 'value="replay"' not in task
        token = csrf_of(task)
        for kind, verb in (("letter", "discard"), ("job", "run"), ("task", "replay")):
            response = await client.post(f"/actions/{kind}", data={"csrf_token": token, "target": "1", "action": verb})
            assert response.status_code == 404
    assert backend.actions == []


async def test_links_forms_and_cookies_live_under_the_mount_path(backend: FakeBackend) -> None:
    outer = FastAPI()
    outer.mount("/tasks-console", console_app(backend, local_only=True))
    async with local_client(outer) as client:
        response = await client.get("/tasks-console/tasks")
        assert response.status_code == 200
        html = response.text
        assert 'href="/tasks-console/_static/console.css"' in html
        assert 'data-live="/tasks-console/_live"' in html
        assert f'href="/tasks-console/tasks/{QUEUE}/tasks/t99999"' in html
        assert "Path=/tasks-console/" in response.headers["set-cookie"]
        token = csrf_of((await client.get("/tasks-console/queues")).text)
        done = await client.post(
            "/tasks-console/actions/queue",
            data={"csrf_token": token, "target": QUEUE, "action": "pause"},
            follow_redirects=False,
        )
    assert done.headers["location"] == "/tasks-console/queues"
    assert backend.actions == [("queue", QUEUE, "pause")]
