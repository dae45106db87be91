"""HTTP endpoints of live machine state: a snapshot and a server-sent-event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from server.auth.deps import admit, authenticate, require
from server.errors import DomainError
from server.errors import COMMON_ERRORS
from server.live.schemas import LiveMachine
from server.db import SessionDep, session_scope
from server.live.state import LiveFeed, snapshot as live_snapshot
from server.security import DISPLAY_ROLE, Principal

router = APIRouter(prefix="/live", tags=["live machine state"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require("operator", "production_manager", "quality_engineer", "admin",
                                              DISPLAY_ROLE))]
WATCHERS = ("production_manager", "quality_engineer", "admin", DISPLAY_ROLE)
Watcher = Annotated[Principal, Depends(require(*WATCHERS))]

KEEPALIVE_SECONDS = 15.0
STALE_CHECK_SECONDS = 5.0
SESSION_CHECK_SECONDS = 5.0  # an expired, logged-out or revoked session's stream ends within this


def live_feed(request: Request) -> LiveFeed:
    """The process's feed of live state changes."""
    return request.app.state.live


@router.get("/machines", response_model=dict[str, LiveMachine])
def snapshot(session: SessionDep, actor: Reader) -> dict[str, LiveMachine]:
    """Every machine's latest live state, keyed by machine id (offline when its agent went silent)."""
    return live_snapshot(session)


def _event(name: str, data: str) -> str:
    return f"event: {name}\ndata: {data}\n\n"


def _session_problem(request: Request, token: str) -> dict | None:
    """Why the stream's token no longer admits it (expired, logged out, revoked, role changed), or None."""
    try:
        with session_scope(request.app.state.sessionmaker) as session:
            admit(authenticate(session, token), WATCHERS, agents=False)
    except DomainError as e:
        return {"code": e.code, "detail": e.detail}
    return None


async def _stream(request: Request, feed: LiveFeed, token: str) -> AsyncIterator[str]:
    queue = await feed.subscribe()
    loop = asyncio.get_running_loop()
    next_check = loop.time() + SESSION_CHECK_SECONDS
    try:
        machines = await asyncio.to_thread(feed.read)
        yield _event("snapshot", json.dumps({m: s.model_dump(mode="json") for m, s in machines.items()}))
        idle = 0.0
        while not await request.is_disconnected():
            if loop.time() >= next_check:
                # The stream outlives the request's authentication: a session that ended must end the stream,
                # saying why, rather than leave a screen that says "Live" for someone no longer admitted.
                next_check = loop.time() + SESSION_CHECK_SECONDS
                problem = await asyncio.to_thread(_session_problem, request, token)
                if problem is not None:
                    yield _event("session_ended", json.dumps(problem))
                    return
            try:
                item: LiveMachine = await asyncio.wait_for(queue.get(), timeout=min(
                    STALE_CHECK_SECONDS, max(0.1, next_check - loop.time())))
                yield _event("machine", item.model_dump_json())
                idle = 0.0
            except TimeoutError:
                idle += STALE_CHECK_SECONDS  # at most: a shorter wait for the session check only delays it
                if idle >= KEEPALIVE_SECONDS:  # a comment line keeps proxies from closing a quiet stream
                    yield ": keep-alive\n\n"
                    idle = 0.0
    finally:
        feed.unsubscribe(queue)


@router.get("/machines/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-sent events: `snapshot` (all machines) first, then "
                                            "`machine` (one LiveMachine) at every change; `session_ended` "
                                            "({code, detail}) when the token stops admitting the stream"}})
async def stream(request: Request, actor: Watcher) -> StreamingResponse:
    """Server-sent events of live machine state; send the bearer token in the Authorization header."""
    token = request.headers.get("authorization", "").partition(" ")[2]
    return StreamingResponse(_stream(request, live_feed(request), token), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
