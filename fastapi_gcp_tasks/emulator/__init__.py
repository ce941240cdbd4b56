"""A local emulator of Cloud Tasks v2 and Cloud Scheduler v1, for development and tests.

```python
from fastapi_gcp_tasks.emulator import Emulator

with Emulator(queues=["projects/p/locations/l/queues/default"]) as emu:
    client = emu.tasks_client()          # the official CloudTasksClient, talking to the emulator
    ...
    emu.wait_until_idle()
    assert emu.deliveries[0].status == 200
```

`with Emulator()` runs it in a background thread with its own event loop; `async with Emulator()` runs
it on the current loop. The command line equivalent is `fastapi-gcp-tasks emulator`.
"""

from __future__ import annotations

import importlib.util as _importlib_util
from typing import TYPE_CHECKING as _TYPE_CHECKING

from fastapi_gcp_tasks._lazy import lazy_exports as _lazy_exports

_missing = [name for name in ("hpack", "h11", "uvicorn") if _importlib_util.find_spec(name) is None]
if _missing:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'the emulator needs the "emulator" extra: pip install "fastapi-gcp-tasks[emulator]"', name=_missing[0]
    )

if _TYPE_CHECKING:
    from fastapi_gcp_tasks.emulator._clock import ManualClock, SystemClock
    from fastapi_gcp_tasks.emulator._delivery import AsyncASGIDeliverer, HttpDeliverer
    from fastapi_gcp_tasks.emulator._emulator import Emulator
    from fastapi_gcp_tasks.emulator._types import DeliveryRecord

__all__ = [
    "AsyncASGIDeliverer",
    "DeliveryRecord",
    "Emulator",
    "HttpDeliverer",
    "ManualClock",
    "SystemClock",
]

_LAZY: dict[str, str] = {
    "AsyncASGIDeliverer": "fastapi_gcp_tasks.emulator._delivery",
    "DeliveryRecord": "fastapi_gcp_tasks.emulator._types",
    "Emulator": "fastapi_gcp_tasks.emulator._emulator",
    "HttpDeliverer": "fastapi_gcp_tasks.emulator._delivery",
    "ManualClock": "fastapi_gcp_tasks.emulator._clock",
    "SystemClock": "fastapi_gcp_tasks.emulator._clock",
}
"""Public name -> the module that defines it (imported on first use, so `emulator --help` stays cheap)."""

__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)
