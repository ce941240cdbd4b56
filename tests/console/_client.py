"""Driving a console app in tests: an httpx client over ASGI that looks local, and a page's CSRF token."""

from __future__ import annotations

import re
from typing import Any

import httpx
from starlette.types import ASGIApp

_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def local_client(
    app: ASGIApp, *, client: tuple[str, int] = ("127.0.0.1", 50000), host: str = "127.0.0.1", **kwargs: Any
) -> httpx.AsyncClient:
    """A client whose peer address is `client` and whose Host is `host` (loopback by default); follows redirects."""
    transport = httpx.ASGITransport(app=app, client=client)
    kwargs.setdefault("follow_redirects", True)
    return httpx.AsyncClient(transport=transport, base_url=f"http://{host}", **kwargs)


def csrf_of(html: str) -> str:
    """The double-submit token in a page's action forms."""
    match = _TOKEN.search(html)
    assert match is not None, "the page has no action form"
    return match.group(1)
