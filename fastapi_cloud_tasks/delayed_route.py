"""fastapi-cloud-tasks' `delayed_route` module: the same names from `fastapi_gcp_tasks.delayed_route`."""

from fastapi_gcp_tasks.delayed_route import *  # noqa: F403
from fastapi_gcp_tasks.delayed_route import __all__ as __all__
