"""The console's defences, each written once: local-only access, cross-site request refusal, response headers.

The console shows task arguments and can purge queues, so it is treated like an admin page:

- `local_only`: only loopback clients, and only under a loopback Host name (a DNS-rebinding page that resolves
  its own name to 127.0.0.1 still sends its own name as Host).
- Every action is a POST that must come from the console's own pages: `Sec-Fetch-Site` (when the browser sends
  it) is `same-origin` or `none`, `Origin` (when sent) names the Host, and a double-submit token (an HttpOnly
  SameSite=Strict cookie echoed in a hidden form field) matches in constant time.
- Every response carries a strict Content-Security-Policy (no inline script, nothing from another origin),
  `X-Frame-Options: DENY`, `Referrer-Policy: same-origin`, `nosniff`, and pages are `no-store`.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "SECURITY_HEADERS",
    "SecurityHeaders",
    "cross_site_reason",
    "is_loopback_client",
    "is_loopback_host",
    "new_csrf_token",
    "valid_csrf_token",
]

CSRF_COOKIE = "fgt_console_csrf"
CSRF_FIELD = "csrf_token"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")

SECURITY_HEADERS: Mapping[str, str] = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
"""Set on every response of the console, errors included."""

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def _is_loopback_ip(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_client(scope: Scope) -> bool:
    """Whether the connection comes from this machine (the peer address, not a forwarded header)."""
    client = scope.get("client")
    return client is not None and _is_loopback_ip(str(client[0]))


def is_loopback_host(host: str | None) -> bool:
    """Whether a Host header names this machine: `localhost`, `*.localhost`, 127.0.0.0/8 or ::1, any port."""
    if not host:
        return False
    name = urlsplit(f"//{host}").hostname
    if name is None:
        return False
    name = name.lower()
    return name in _LOOPBACK_NAMES or name.endswith(".localhost") or _is_loopback_ip(name)


def cross_site_reason(headers: Mapping[str, str]) -> str | None:
    """Why a POST with these headers may come from another site, or None when it comes from the console's pages.

    Browsers send `Sec-Fetch-Site` on every request since 2023 and `Origin` on every POST; either one naming
    another site refuses the request. Clients that send neither (curl, tests) still need the CSRF token.
    """
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site!r}"
    origin = headers.get("origin")
    if origin is not None:
        if origin == "null":
            return "Origin is 'null'"
        origin_host = urlsplit(origin).netloc.lower()
        host = headers.get("host", "").lower()
        if not origin_host or origin_host != host:
            return f"Origin {origin!r} does not match Host {host!r}"
    return None


def new_csrf_token() -> str:
    """A fresh double-submit token (32 random bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def valid_csrf_token(cookie: str | None, field: str | None) -> bool:
    """Whether the form's token equals the cookie's (constant time), both well-formed."""
    if not cookie or not field or _TOKEN.fullmatch(cookie) is None:
        return False
    return hmac.compare_digest(cookie.encode(), field.encode())


class SecurityHeaders:
    """Pure ASGI middleware adding `SECURITY_HEADERS` to every HTTP response, and `no-store` unless already cached.

    Wraps `send` so that responses built anywhere (pages, errors raised by the auth dependency, 404s) get them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode("latin-1").lower() not in _OURS]
                headers.extend((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items())
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


_OURS = frozenset(SECURITY_HEADERS)
