"""Helpers for testing apps that use fastapi-gcp-tasks (see docs/testing.md).

* `use_emulator(emulator)`: point the default clients and every builder at an emulator, and undo it.
* `reset_clients()`: close and forget the cached default clients and the queues builders created.
* `eager_tasks(app)`: run each `.delay()` at once, in-process, through the app (no emulator).
* `wait_for_tasks(emulator)` / `wait_for_tasks_async`: wait until the tasks delayed so far are created
  (buffered ones too) and delivered.
* `created_tasks(source, endpoint)` / `assert_task_created(source, endpoint, **arguments)`: which tasks were
  created for an endpoint, with the arguments the endpoint receives.

The pytest plugin (`fastapi_gcp_tasks.testing.pytest_plugin`, loaded automatically) has the fixtures.
Names are imported on first use, so that loading the plugin costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi_gcp_tasks._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from fastapi_gcp_tasks.testing._assertions import CreatedTask, assert_task_created, created_tasks
    from fastapi_gcp_tasks.testing._eager import EagerDelivery, EagerTaskError, EagerTasks, eager_tasks
    from fastapi_gcp_tasks.testing._env import use_emulator
    from fastapi_gcp_tasks.testing._wait import wait_for_tasks, wait_for_tasks_async
    from fastapi_gcp_tasks.transport._clients import reset_clients

__all__ = [
    "CreatedTask",
    "EagerDelivery",
    "EagerTaskError",
    "EagerTasks",
    "assert_task_created",
    "created_tasks",
    "eager_tasks",
    "reset_clients",
    "use_emulator",
    "wait_for_tasks",
    "wait_for_tasks_async",
]

_LAZY = {
    "CreatedTask": "fastapi_gcp_tasks.testing._assertions",
    "EagerDelivery": "fastapi_gcp_tasks.testing._eager",
    "EagerTaskError": "fastapi_gcp_tasks.testing._eager",
    "EagerTasks": "fastapi_gcp_tasks.testing._eager",
    "assert_task_created": "fastapi_gcp_tasks.testing._assertions",
    "created_tasks": "fastapi_gcp_tasks.testing._assertions",
    "eager_tasks": "fastapi_gcp_tasks.testing._eager",
    "reset_clients": "fastapi_gcp_tasks.transport._clients",
    "use_emulator": "fastapi_gcp_tasks.testing._env",
    "wait_for_tasks": "fastapi_gcp_tasks.testing._wait",
    "wait_for_tasks_async": "fastapi_gcp_tasks.testing._wait",
}


__getattr__, __dir__ = _lazy_exports(__name__, _LAZY)
