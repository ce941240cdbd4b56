"""Pointing the default clients and every builder at one emulator, and undoing it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fastapi_gcp_tasks.transport._clients import EMULATOR_HOST_ENV, reset_clients

if TYPE_CHECKING:
    from fastapi_gcp_tasks.emulator import Emulator

__all__ = ["use_emulator"]


@contextlib.contextmanager
def use_emulator(emulator: Emulator | str) -> Iterator[None]:
    """Within the block, default clients talk to `emulator` (an `Emulator` or its `host:port`).

    Sets `FASTAPI_GCP_TASKS_EMULATOR_HOST` and calls `reset_clients()` on entry, so that clients created
    earlier (for another emulator, or for Google) are not reused and builders create their queues again;
    on exit the variable gets its previous value back and the clients are reset again.
    """
    address = emulator if isinstance(emulator, str) else emulator.address
    if not isinstance(address, str) or not address:
        raise TypeError(f"emulator must be an Emulator or a host:port string, not {emulator!r}")
    previous = os.environ.get(EMULATOR_HOST_ENV)
    os.environ[EMULATOR_HOST_ENV] = address
    reset_clients()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(EMULATOR_HOST_ENV, None)
        else:
            os.environ[EMULATOR_HOST_ENV] = previous
        reset_clients()
