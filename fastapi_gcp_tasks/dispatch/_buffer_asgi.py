"""Watching an HTTP response on its way out: its status, and (optionally) holding back its last message."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

__all__ = ["Message", "ResponseWatch", "Send"]


class ResponseWatch:
    """Wraps an ASGI `send`: records the response status, and with `hold_last` keeps the message that
    completes the response until `release()` so that work can happen before the client sees the end.
    """

    __slots__ = ("_hold_last", "_send", "_trailers", "held", "status")

    def __init__(self, send: Send, *, hold_last: bool) -> None:
        self._send = send
        self._hold_last = hold_last
        self._trailers = False
        self.status: int | None = None
        self.held: Message | None = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
            self._trailers = bool(message.get("trailers", False))
        elif self._hold_last and self._completes(kind, message):
            self.held = message
            return
        await self._send(message)

    def _completes(self, kind: str, message: Message) -> bool:
        if kind == "http.response.body":
            return not message.get("more_body", False) and not self._trailers
        if kind == "http.response.trailers":
            return not message.get("more_trailers", False)
        return kind in ("http.response.pathsend", "http.response.zerocopysend") and not message.get("more_body", False)

    async def release(self) -> None:
        """Send the held message, if any."""
        held, self.held = self.held, None
        if held is not None:
            await self._send(held)
