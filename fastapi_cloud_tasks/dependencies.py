"""fastapi-cloud-tasks' `dependencies` module: the same names from `fastapi_gcp_tasks.dependencies`."""

from fastapi_gcp_tasks.dependencies import *  # noqa: F403
from fastapi_gcp_tasks.dependencies import __all__ as __all__
