"""The console's defences: no console without auth, auth before every route, cross-site POSTs, local-only."""

from __future__ import annotations

import pytest
from fastapi import Header, HTTPException, Request

from fastapi_gcp_tasks.console import ConsoleConfigError, console_app, create_console
from fastapi_gcp_tasks.console._security import cross_site_reason, is_loopback_host, valid_csrf_token
from fastapi_gcp_tasks.exception import FastAPIGCPTasksError
from tests.console._client import csrf_of, local_client
from tests.console._fake import QUEUE, FakeBackend

ROUTES = [
    ("GET", "/"),
    ("GET", "/tasks"),
    ("GET", f"/tasks/{QUEUE}/tasks/t99999"),
    ("GET", "/tasks?limit=notanumber&status=evil"),
    ("GET", "/queues"),
    ("GET", f"/queues/purge?queue={QUEUE}"),
    ("GET", "/dead-letters"),
    ("GET", "/schedules"),
    ("GET", "/_live?token=x"),
    ("GET", "/_static/console.js"),
    ("GET", "/_static/console.css"),
    ("POST", "/actions/queue"),
    ("POST", "/actions/task"),
    ("POST", "/actions/letter"),
    ("POST", "/actions/job"),
    ("POST", "/actions/clock"),
]


def require_admin(x_user: str | None = Header(default=None)) -> str:
    """A sync FastAPI dependency: 401 without a user, 403 for anyone but admin."""
    if x_user is None:
        raise HTTPException(401, "log in", headers={"WWW-Authenticate": "Bearer"})
    if x_user != "admin":
        raise HTTPException(403, "not an admin")
    return x_user


async def require_admin_async(request: Request) -> None:
    """An async dependency taking the request."""
    if request.headers.get("x-user") != "admin":
        raise HTTPException(403, "not an admin")


def test_no_auth_refuses_to_build_a_console() -> None:
    with pytest.raises(ConsoleConfigError) as caught:
        create_console()
    assert caught.value.param == "auth"
    assert isinstance(caught.value, FastAPIGCPTasksError)
    with pytest.raises(ConsoleConfigError, match="local_only=True"):
        console_app(FakeBackend())
    with pytest.raises(ConsoleConfigError) as caught:
        console_app(FakeBackend(), auth="admin")  # type: ignore[arg-type]
    assert caught.value.param == "auth"
    with pytest.raises(ConsoleConfigError) as caught:
        console_app(FakeBackend(), local_only="yes")  # type: ignore[arg-type]
    assert caught.value.param == "local_only"


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("auth", [require_admin, require_admin_async])
async def test_unauthenticated_requests_are_refused_on_every_route(method: str, path: str, auth: object) -> None:
    backend = FakeBackend()
    app = console_app(backend, auth=auth)  # type: ignore[arg-type]
    async with local_client(app, follow_redirects=False) as client:
        form = {"csrf_token": "x" * 43, "target": QUEUE, "action": "pause"}
        cookies = {"fgt_console_csrf": "x" * 43}
        for headers in ({}, {"x-user": "mallory"}):
            client.cookies.update(cookies)
            response = await client.request(method, path, headers=headers, data=form if method == "POST" else None)
            assert response.status_code in (401, 403), (path, response.status_code)
            assert "content-security-policy" in response.headers
            assert "set-cookie" not in response.headers
    assert backend.actions == []


async def test_an_authenticated_user_sees_and_acts() -> None:
    backend = FakeBackend()
    app = console_app(backend, auth=require_admin)
    async with local_client(app, headers={"x-user": "admin"}, host="console.example.com") as client:
        page = await client.get("/queues")
        assert page.status_code == 200
        response = await client.post(
            "/actions/queue",
            data={"csrf_token": csrf_of(page.text), "target": QUEUE, "action": "pause"},
            headers={"origin": "http://console.example.com"},
        )
    assert response.status_code == 200
    assert backend.actions == [("queue", QUEUE, "pause")]


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"origin": "https://evil.example"}, "page"),
        ({"origin": "null"}, "page"),
        ({"origin": "http://127.0.0.1.evil.example"}, "page"),
        ({"sec-fetch-site": "cross-site"}, "page"),
        ({"sec-fetch-site": "same-site"}, "page"),
        ({"sec-fetch-site": "same-origin"}, None),
        ({}, None),
        ({}, "forged"),
        ({}, "short"),
    ],
)
async def test_cross_site_posts_are_refused_and_do_nothing(headers: dict[str, str], token: str | None) -> None:
    backend = FakeBackend()
    async with local_client(console_app(backend, local_only=True), follow_redirects=False) as client:
        page_token = csrf_of((await client.get("/queues")).text)
        form = {"target": QUEUE, "action": "pause"}
        if token == "page":
            form["csrf_token"] = page_token
        elif token == "forged":
            form["csrf_token"] = page_token[:-1] + ("A" if page_token[-1] != "A" else "B")
        elif token == "short":
            client.cookies.set("fgt_console_csrf", "abc")
            form["csrf_token"] = "abc"
        response = await client.post("/actions/queue", data=form, headers=headers)
    assert response.status_code == 403
    assert backend.actions == []


async def test_a_json_post_is_not_an_action() -> None:
    backend = FakeBackend()
    async with local_client(console_app(backend, local_only=True)) as client:
        token = csrf_of((await client.get("/queues")).text)
        response = await client.post("/actions/queue", json={"csrf_token": token, "target": QUEUE, "action": "pause"})
    assert response.status_code == 415
    assert backend.actions == []


@pytest.mark.parametrize(
    ("client", "host", "allowed"),
    [
        (("127.0.0.1", 1), "127.0.0.1", True),
        (("127.0.0.1", 1), "localhost:8123", True),
        (("::1", 1), "[::1]:8123", True),
        (("127.0.0.1", 1), "app.localhost", True),
        (("127.0.0.1", 1), "evil.example", False),  # DNS rebinding: a page whose name resolves to 127.0.0.1
        (("127.0.0.1", 1), "127.0.0.1.nip.io", False),
        (("10.0.0.5", 1), "127.0.0.1", False),
        (("203.0.113.9", 1), "localhost", False),
    ],
)
async def test_local_only_serves_loopback_clients_under_loopback_names(
    client: tuple[str, int], host: str, allowed: bool
) -> None:
    backend = FakeBackend()
    app = console_app(backend, local_only=True)
    async with local_client(app, client=client, host=host) as http:
        for path in ("/", "/_live", "/_static/console.js"):
            response = await http.get(path)
            assert response.status_code == (200 if allowed else 403), (path, response.text)
        response = await http.post("/actions/queue", data={"target": QUEUE, "action": "pause"})
        assert response.status_code == 403
    assert backend.actions == []


async def test_local_only_and_auth_both_apply() -> None:
    app = console_app(FakeBackend(), local_only=True, auth=require_admin)
    async with local_client(app) as client:
        assert (await client.get("/")).status_code == 401
        assert (await client.get("/", headers={"x-user": "admin"})).status_code == 200
    async with local_client(app, client=("10.1.1.1", 1)) as client:
        assert (await client.get("/", headers={"x-user": "admin"})).status_code == 403


def test_the_csrf_cookie_is_strict_and_http_only() -> None:
    assert not valid_csrf_token(None, None)
    assert not valid_csrf_token("a" * 43, "a" * 42)
    assert not valid_csrf_token("a" * 42, "a" * 42)
    assert valid_csrf_token("a" * 43, "a" * 43)


async def test_pages_set_a_strict_http_only_csrf_cookie() -> None:
    async with local_client(console_app(FakeBackend(), local_only=True)) as client:
        cookie = (await client.get("/")).headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert "path=/" in cookie
        assert "set-cookie" not in (await client.get("/")).headers  # kept, not rotated on every page


def test_header_helpers() -> None:
    assert is_loopback_host("LOCALHOST:80")
    assert not is_loopback_host(None)
    assert not is_loopback_host("")
    assert not is_loopback_host("localhost.evil.example")
    assert cross_site_reason({"sec-fetch-site": "none"}) is None
    assert cross_site_reason({"origin": "http://a:1", "host": "a:1"}) is None
    assert cross_site_reason({"origin": "http://a:2", "host": "a:1"}) is not None
