"""`task_default_options` (the 0.3 module): re-exports `build._defaults`."""

from fastapi_gcp_tasks.build._defaults import (
    task_default_options,
)

__all__ = [
    "task_default_options",
]
