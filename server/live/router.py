"""HTTP endpoints of live machine state: a snapshot and a server-sent-event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from server.auth.deps import require
from server.errors import COMMON_ERRORS
from server.live.schemas import LiveMachine
from server.live.state import LiveMachineStates
from server.security import Principal

router = APIRouter(prefix="/live", tags=["live machine state"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require("operator", "production_manager", "quality_engineer", "admin"))]
Watcher = Annotated[Principal, Depends(require("production_manager", "quality_engineer", "admin"))]

KEEPALIVE_SECONDS = 15.0
STALE_CHECK_SECONDS = 5.0


def live_states(request: Request) -> LiveMachineStates:
    """The process's live state store."""
    return request.app.state.live


@router.get("/machines", response_model=dict[str, LiveMachine])
def snapshot(request: Request, actor: Reader) -> dict[str, LiveMachine]:
    """Every machine's latest live state, keyed by machine id (offline when its agent went silent)."""
    return live_states(request).snapshot()


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


async def _stream(request: Request, live: LiveMachineStates) -> AsyncIterator[str]:
    queue = live.subscribe()
    seen_stale: set[str] = set()
    try:
        machines = live.snapshot()
        seen_stale.update(m for m, s in machines.items() if s.stale)
        yield _event("snapshot", json.dumps({m: s.model_dump(mode="json") for m, s in machines.items()}))
        idle = 0.0
        while not await request.is_disconnected():
            try:
                item: LiveMachine = await asyncio.wait_for(queue.get(), timeout=STALE_CHECK_SECONDS)
                yield _event("machine", item.model_dump_json())
                idle = 0.0
            except TimeoutError:
                for gone in live.stale_since_last_look(seen_stale):
                    yield _event("machine", gone.model_dump_json())
                idle += STALE_CHECK_SECONDS
                if idle >= KEEPALIVE_SECONDS:  # a comment line keeps proxies from closing a quiet stream
                    yield ": keep-alive\n\n"
                    idle = 0.0
    finally:
        live.unsubscribe(queue)


@router.get("/machines/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-sent events: `snapshot` (all machines) first, then "
                                            "`machine` (one LiveMachine) at every change"}})
async def stream(request: Request, actor: Watcher) -> StreamingResponse:
    """Server-sent events of live machine state; send the bearer token in the Authorization header."""
    return StreamingResponse(_stream(request, live_states(request)), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
