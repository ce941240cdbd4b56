"""Build: from an endpoint and the values of one call to the request Cloud Tasks or Cloud Scheduler will send.

Pure code, no I/O. When a route is registered, `_routes.py` computes everything that depends only on the
route (`_plan.RoutePlan`: parameter plans, the URL template, the HTTP method); each `.delay()` then turns
validated values into a `CreateTaskRequest` (`_task.py`), each `.scheduler(...)` into a `Job` (`_job.py`).
The four 0.3 builders (`_builders.py`), hooks, typing protocols and `task_default_options` live here too.
"""
