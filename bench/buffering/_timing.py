"""Server-side time to response: from the ASGI call to the message that completes the response.

Shared by both benchmark apps (plain Python, no dependency on either package), so that the time the
app spends before the client can have its answer is measured apart from client and CPU-contention noise.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class Timing:
    """Outermost ASGI wrapper recording, per path, seconds until the last body message was sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.samples: dict[str, list[float]] = {}

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        samples = self.samples.setdefault(scope["path"], [])

        async def timed_send(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                samples.append(time.perf_counter() - start)

        await self.app(scope, receive, timed_send)

    def take(self) -> dict[str, list[float]]:
        """The samples so far, forgetting them."""
        samples, self.samples = self.samples, {}
        return samples
