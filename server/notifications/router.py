"""HTTP endpoints for a person's notifications."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from server.auth.deps import ANY_PERSON, require
from server.db import SessionDep
from server.errors import COMMON_ERRORS
from server.notifications import service
from server.security import Principal

router = APIRouter(prefix="/notifications", tags=["notifications"], responses=COMMON_ERRORS)
Person = Annotated[Principal, Depends(require(*ANY_PERSON))]


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
    return [NotificationOut.model_validate(n) for n in service.mine(session, actor=actor, unread_only=unread)]


@router.post("/{notification_id}/read", response_model=NotificationOut)
def read(notification_id: int, session: SessionDep, actor: Person) -> NotificationOut:
    """Mark one of your notifications read."""
    return NotificationOut.model_validate(service.mark_read(session, actor=actor, notification_id=notification_id))
