"""fastapi-cloud-tasks' `exception` module: the same names from `fastapi_gcp_tasks.exception`."""

from fastapi_gcp_tasks.exception import (
    BadMethodError,
    BufferRequiredError,
    ClientClosedError,
    FastAPIGCPTasksError,
    MissingParamError,
    RouteDefinitionError,
    SendError,
    TaskAlreadyExistsError,
    TaskArgumentError,
    TaskLimitError,
    UnknownParamError,
    UnrepresentableValueError,
    WorkerConfigError,
    WrongTypeError,
)

__all__ = [
    "BadMethodError",
    "BufferRequiredError",
    "ClientClosedError",
    "FastAPIGCPTasksError",
    "MissingParamError",
    "RouteDefinitionError",
    "SendError",
    "TaskAlreadyExistsError",
    "TaskArgumentError",
    "TaskLimitError",
    "UnknownParamError",
    "UnrepresentableValueError",
    "WorkerConfigError",
    "WrongTypeError",
]
