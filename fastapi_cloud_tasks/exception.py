"""fastapi-cloud-tasks' `exception` module: the same names from `fastapi_gcp_tasks.exception`."""

from fastapi_gcp_tasks.exception import *  # noqa: F403
from fastapi_gcp_tasks.exception import __all__ as __all__
