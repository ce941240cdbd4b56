"""fastapi-cloud-tasks' `decorators` module: the same names from `fastapi_gcp_tasks.decorators`."""

from fastapi_gcp_tasks.decorators import *  # noqa: F403
from fastapi_gcp_tasks.decorators import __all__ as __all__
