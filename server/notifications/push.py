"""Outbound notifications (R16: notify designers and production where they are, not only in amtrace).

Every notification is POSTed as JSON to `notify_webhook_url`, one message per person and notice with the person's
username, role and name, so a mail, chat or pager gateway can route it. The notifications table is the durable
queue: a row counts as pushed only once the receiver answered 2xx; a refusal, a timeout or a dead receiver backs
the row off (2, 4, 8 … s, at most an hour) and it is tried again, also after a server restart. Delivery is at
least once: the receiver deduplicates by `id` (a push answered 2xx but lost on the way back is sent again).
The body is signed with HMAC-SHA256 (`X-Amtrace-Signature: sha256=<hex>`) when a secret is set."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from starlette.concurrency import run_in_threadpool

from server.db import session_scope
from server.models import Notification, User, utcnow
from server.settings import Settings

log = logging.getLogger("amtrace.notify")
BATCH = 50
TIMEOUT_S = 10.0
MAX_BACKOFF_S = 3600.0
LEASE_S = BATCH * TIMEOUT_S  # longer than one batch can take, even against a receiver that always times out


@dataclass(frozen=True)
class Push:
    """One notice to send, read in a short transaction (no database lock is held while sending)."""

    id: int
    attempts: int
    body: bytes


def body_of(n: Notification, user: User) -> bytes:
    """The JSON a receiver gets: the notice and whom it is for."""
    return json.dumps({"id": n.id, "kind": n.kind, "message": n.message, "record_type": n.record_type,
                       "record_id": n.record_id, "created_at": n.created_at.isoformat(),
                       "recipient": {"username": user.username, "full_name": user.full_name, "role": user.role}},
                      separators=(",", ":"), sort_keys=True).encode()


def signature_of(secret: str, body: bytes) -> str:
    """The header value that proves the body came from this server."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def due(maker, settings: Settings, now: datetime) -> list[Push]:
    """Notices not yet taken by the receiver whose next try is due, oldest first, each leased to this process
    for a while (so two server processes do not send the same notice at the same time)."""
    ready = or_(Notification.push_after.is_(None), Notification.push_after <= now)
    with session_scope(maker) as session:
        rows = session.execute(
            select(Notification, User).join(User, User.id == Notification.user_id)
            .where(Notification.pushed_at.is_(None), ready,
                   Notification.created_at >= now - timedelta(hours=settings.notify_push_max_age_h))
            .order_by(Notification.id).limit(BATCH)).all()
        out = []
        for n, u in rows:
            # The conditional UPDATE is the claim: another process that read the same row finds it leased.
            claim = (update(Notification).where(Notification.id == n.id, Notification.pushed_at.is_(None), ready)
                     .values(push_after=now + timedelta(seconds=LEASE_S)).execution_options(synchronize_session=False))
            if session.execute(claim).rowcount == 1:
                out.append(Push(n.id, n.push_attempts, body_of(n, u)))
        return out


def send(settings: Settings, push: Push) -> str | None:
    """POST one notice; None when the receiver took it, else why not."""
    headers = {"Content-Type": "application/json", "User-Agent": "amtrace-notify",
               "X-Amtrace-Notification": str(push.id)}
    if settings.notify_webhook_secret:
        headers["X-Amtrace-Signature"] = signature_of(settings.notify_webhook_secret, push.body)
    request = urllib.request.Request(settings.notify_webhook_url, data=push.body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as r:  # noqa: S310 - the URL is the admin's setting
            return None if 200 <= r.status < 300 else f"HTTP {r.status}"
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError) as e:
        return f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def push_due(maker, settings: Settings) -> tuple[int, int]:
    """Push what is due; (taken, failed). Results are written back in one short transaction."""
    now = utcnow()
    results = [(p, send(settings, p)) for p in due(maker, settings, now)]
    if not results:
        return 0, 0
    done = utcnow()
    with session_scope(maker) as session:
        for p, error in results:
            n = session.get(Notification, p.id)
            if n is None or n.pushed_at is not None:
                continue
            if error is None:
                n.pushed_at, n.push_error = done, None
            else:
                n.push_attempts = p.attempts + 1
                n.push_after = done + timedelta(seconds=min(2.0 ** n.push_attempts, MAX_BACKOFF_S))
                n.push_error = error[:500]
    failed = sum(1 for _, e in results if e is not None)
    return len(results) - failed, failed


async def push_notifications(app) -> None:
    """Until cancelled: push due notifications every settings.notify_push_interval_s; never dies of an error."""
    settings: Settings = app.state.settings
    while True:
        try:
            taken, failed = await run_in_threadpool(push_due, app.state.sessionmaker, settings)
            if failed:
                log.warning("notification webhook: %d taken, %d refused or unreachable (will retry)", taken, failed)
        except Exception:  # noqa: BLE001 - a database hiccup must not end the push
            log.exception("notification push failed; trying again")
        await asyncio.sleep(settings.notify_push_interval_s)
