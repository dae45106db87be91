"""HTTP endpoints for a person's notifications."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from server.auth.deps import ANY_PERSON, require
from server.db import SessionDep, session_scope
from server.errors import COMMON_ERRORS
from server.notifications import service
from server.security import Principal

router = APIRouter(prefix="/notifications", tags=["notifications"], responses=COMMON_ERRORS)
Person = Annotated[Principal, Depends(require(*ANY_PERSON, kiosk=True))]


class NotificationOut(BaseModel):
    """A notice for the person asking."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    message: str
    record_type: str
    record_id: str
    created_at: datetime
    read_at: datetime | None


@router.get("", response_model=list[NotificationOut])
def mine(session: SessionDep, actor: Person, unread: bool = False) -> list[NotificationOut]:
    """Your notifications, newest first (unread=true: only those not yet read)."""
    return [NotificationOut.model_validate(n) for n in service.mine(session, user_id=actor.id, unread_only=unread)]


@router.post("/{notification_id}/read", response_model=NotificationOut)
def read(notification_id: int, session: SessionDep, actor: Person) -> NotificationOut:
    """Mark one of your notifications read."""
    return NotificationOut.model_validate(service.mark_read(session, actor=actor, notification_id=notification_id))


RECHECK_S = 5.0  # commits of other server processes do not wake a stream: it looks on its own this often
KEEPALIVE_S = 15.0


def _newer(maker, user_id: int, after_id: int) -> list[NotificationOut]:
    with session_scope(maker) as session:
        return [NotificationOut.model_validate(n) for n in service.after(session, user_id=user_id, after_id=after_id)]


def _start(maker, user_id: int) -> tuple[list[NotificationOut], int]:
    with session_scope(maker) as session:
        unread = [NotificationOut.model_validate(n) for n in service.mine(session, user_id=user_id, unread_only=True)]
        return unread, service.latest_id(session, user_id=user_id)


async def _events(request: Request, user_id: int) -> AsyncIterator[str]:
    watch, maker = request.app.state.notification_watch, request.app.state.sessionmaker
    waiter = watch.watch(str(user_id))  # before reading, so a notice committed in between is not missed
    try:
        unread, last = await run_in_threadpool(_start, maker, user_id)
        yield "event: snapshot\ndata: [" + ",".join(n.model_dump_json() for n in unread) + "]\n\n"
        idle = 0.0
        while not await request.is_disconnected():
            try:
                await asyncio.wait_for(waiter.wait(), timeout=RECHECK_S)
            except TimeoutError:
                idle += RECHECK_S
            waiter.clear()
            for n in await run_in_threadpool(_newer, maker, user_id, last):
                yield f"event: notification\ndata: {n.model_dump_json()}\n\n"
                last, idle = n.id, 0.0
            if idle >= KEEPALIVE_S:  # a comment line keeps proxies from closing a quiet stream
                yield ": keep-alive\n\n"
                idle = 0.0
    finally:
        watch.forget(str(user_id), waiter)


@router.get("/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-sent events: `snapshot` (your unread notices) first, then "
                                            "`notification` (one NotificationOut) as each is raised for you"}})
async def stream(request: Request, actor: Person) -> StreamingResponse:
    """Your notifications as they are raised (server-sent events; the bearer token in the Authorization header)."""
    return StreamingResponse(_events(request, actor.id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
