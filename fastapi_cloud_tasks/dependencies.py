"""fastapi-cloud-tasks' `dependencies` module: the same names from `fastapi_gcp_tasks.dependencies`."""

from fastapi_gcp_tasks.dependencies import (
    CloudSchedulerHeaders,
    CloudTasksHeaders,
    max_retries,
)

__all__ = [
    "CloudSchedulerHeaders",
    "CloudTasksHeaders",
    "max_retries",
]
