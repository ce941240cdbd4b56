"""The console's errors: a console that cannot be served safely as configured, and an action that failed."""

from __future__ import annotations

from fastapi_gcp_tasks.exception import FastAPIGCPTasksError

__all__ = ["ConsoleActionError", "ConsoleConfigError"]


class ConsoleConfigError(FastAPIGCPTasksError, ValueError):
    """`create_console` / `console_app` was given arguments it cannot serve safely (raised when created).

    The usual cause: no `auth` dependency and no `local_only=True` — a console that anyone who reaches the
    app could use to read task arguments and purge queues. `param` names the argument at fault.
    """

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


class ConsoleActionError(FastAPIGCPTasksError):
    """A console action (pause, purge, replay, ...) was refused or failed; the console flashes the message.

    Backends raise it instead of letting a service error become a 500 page.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
