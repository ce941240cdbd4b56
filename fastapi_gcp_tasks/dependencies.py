"""Worker-side dependencies (the 0.3 module): re-exports from `fastapi_gcp_tasks.receive`."""

from fastapi_gcp_tasks.receive._auth import PrivateEndpoint
from fastapi_gcp_tasks.receive._metadata import CloudSchedulerHeaders, CloudTasksHeaders
from fastapi_gcp_tasks.receive._retries import max_retries

__all__ = ["CloudSchedulerHeaders", "CloudTasksHeaders", "PrivateEndpoint", "max_retries"]
