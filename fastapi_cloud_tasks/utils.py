"""fastapi-cloud-tasks' `utils` module: the same names from `fastapi_gcp_tasks.utils`."""

from fastapi_gcp_tasks.utils import *  # noqa: F403
from fastapi_gcp_tasks.utils import __all__ as __all__
