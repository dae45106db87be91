"""The running server's anchor writer: the chain head to the anchor file every audit_anchor_interval_s.

Apart from server.audit.anchors so that the chain's own modules never import the database layer (it builds on them).
"""

from __future__ import annotations

import asyncio
import logging

from server.audit.anchors import write_anchor
from server.db import begin_read

log = logging.getLogger(__name__)


async def anchor_periodically(app) -> None:
    """Write the chain head to the anchor file every audit_anchor_interval_s while the server runs."""
    settings = app.state.settings
    while True:
        try:
            await asyncio.to_thread(_anchor_once, app)
        except Exception:  # noqa: BLE001 - a full disk must not stop the server; the next round tries again
            log.exception("could not write the audit chain anchor to %s", settings.anchor_path)
        await asyncio.sleep(settings.audit_anchor_interval_s)


def _anchor_once(app) -> None:
    settings = app.state.settings
    with app.state.sessionmaker() as session:
        begin_read(session)  # a snapshot: holds up no writer
        write_anchor(session, settings.anchor_path, settings.audit_key)
