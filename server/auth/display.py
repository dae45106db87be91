"""Wall-display tokens: read-only access to the live dashboard that a production manager creates and revokes.

A display token stands for a screen, not a person: its principal has the role `wall_display`, which only the
read endpoints of the dashboard admit (no action, no record, no person's data beyond the dashboard). It does not
expire by time, so a wall display streaming all day is never logged out; it ends when it is revoked, and an open
stream ends within a check period of the revocation (server/live/router.py)."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.errors import NotFound, Unauthorized
from server.models import DisplayToken, utcnow
from server.security import DISPLAY_ROLE, DISPLAY_TOKEN_PREFIX, Principal


def create(session: Session, *, actor: Principal, label: str) -> tuple[DisplayToken, str]:
    """A new display token (shown once; only its SHA-256 is stored)."""
    token = DISPLAY_TOKEN_PREFIX + secrets.token_urlsafe(32)  # 256 bits: a fast hash is enough
    row = DisplayToken(label=label, token_sha256=hashlib.sha256(token.encode()).hexdigest(), created_by=actor.id)
    session.add(row)
    session.flush()
    record(session, actor=actor, action="display_token_created", record_type="display_token", record_id=row.id,
           new={"label": label})
    return row, token


def list_tokens(session: Session) -> list[DisplayToken]:
    """Every display token, newest first."""
    return list(session.scalars(select(DisplayToken).order_by(DisplayToken.id.desc())))


def revoke(session: Session, *, actor: Principal, token_id: int, reason: str) -> DisplayToken:
    """Withdraw a display token: its screen's stream ends and every further request is refused."""
    row = session.get(DisplayToken, token_id)
    if row is None:
        raise NotFound(f"No display token {token_id}", code="display_token_not_found")
    if row.revoked_at is None:
        row.revoked_at, row.revoked_by, row.revoke_reason = utcnow(), actor.id, reason
        record(session, actor=actor, action="display_token_revoked", record_type="display_token",
               record_id=row.id, reason=reason)
    return row


def principal_for_token(session: Session, *, token: str) -> Principal:
    """The display a token stands for; unknown or revoked tokens are refused (checked on every request)."""
    row = session.scalar(select(DisplayToken).where(
        DisplayToken.token_sha256 == hashlib.sha256(token.encode()).hexdigest()))
    if row is None or row.revoked_at is not None:
        raise Unauthorized("This wall display's token was revoked or is unknown; ask a production manager for a "
                           "new display link", code="display_token_invalid")
    return Principal(kind="display", id=row.id, name=f"display-{row.id}", full_name=f"wall display {row.label}",
                     role=DISPLAY_ROLE)
