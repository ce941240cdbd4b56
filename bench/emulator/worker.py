"""The benchmark's worker: a FastAPI app under uvicorn that counts task deliveries and their latency.

A task's JSON body carries `t`, the wall-clock time just before the task was created, so the worker
can record the create-to-delivery latency. `last` is the wall-clock time of the latest delivery: the
drain's end, whenever the benchmark polls for it.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request

app = FastAPI()
state: dict[str, Any] = {"count": 0, "latencies": [], "last": 0.0}


@app.post("/task")
async def task(request: Request) -> dict[str, bool]:
    body = await request.json()
    state["count"] += 1
    state["last"] = time.time()
    sent = body.get("t")
    if sent:
        state["latencies"].append(time.time() - sent)
    return {"ok": True}


@app.get("/stats")
async def stats() -> dict[str, Any]:
    return state


@app.post("/reset")
async def reset() -> dict[str, bool]:
    state["count"] = 0
    state["latencies"] = []
    state["last"] = 0.0
    return {"ok": True}
