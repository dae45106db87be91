"""The server's own watch over deadlines: every few seconds, steps that became overdue are notified (R9)."""

from __future__ import annotations

import asyncio
import logging

from starlette.concurrency import run_in_threadpool

from server.db import session_scope
from server.models import utcnow
from server.stages.service import notify_overdue

log = logging.getLogger("amtrace.overdue")


async def watch_overdue(app) -> None:
    """Until cancelled: notify steps that became overdue, every settings.overdue_check_s; never dies of an error."""
    while True:
        try:
            n = await run_in_threadpool(_check, app.state.sessionmaker)
            if n:
                log.info("%d step(s) became overdue: production notified", n)
        except Exception:  # noqa: BLE001 - a database hiccup must not end the watch
            log.exception("overdue check failed; trying again")
        await asyncio.sleep(app.state.settings.overdue_check_s)


def _check(maker) -> int:
    with session_scope(maker) as session:
        return notify_overdue(session, now=utcnow())
