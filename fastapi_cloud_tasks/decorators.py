"""fastapi-cloud-tasks' `decorators` module: the same names from `fastapi_gcp_tasks.decorators`."""

from fastapi_gcp_tasks.decorators import (
    task_default_options,
)

__all__ = [
    "task_default_options",
]
