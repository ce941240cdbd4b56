"""Buffered mode: a request's tasks are created only once it succeeded. Re-exports `dispatch._buffer`."""

from fastapi_gcp_tasks.dispatch._buffer import (
    BufferCollector,
    BufferFallback,
    BufferStats,
    DiscardOn,
    Flush,
    FlushReport,
    LostTask,
    RetryPolicy,
    TaskBuffer,
    TaskBufferMiddleware,
    require_buffer,
    task_buffer,
)

__all__ = [
    "BufferCollector",
    "BufferFallback",
    "BufferStats",
    "DiscardOn",
    "Flush",
    "FlushReport",
    "LostTask",
    "RetryPolicy",
    "TaskBuffer",
    "TaskBufferMiddleware",
    "require_buffer",
    "task_buffer",
]
