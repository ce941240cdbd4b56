"""fastapi-cloud-tasks' `hooks` module: the same names from `fastapi_gcp_tasks.hooks`."""

from fastapi_gcp_tasks.hooks import *  # noqa: F403
from fastapi_gcp_tasks.hooks import __all__ as __all__
