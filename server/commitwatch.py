"""Waking waiters when a commit changed what they wait for: the base of the agents' context long poll and the
people's notification stream.

Within one server process a commit wakes the waiters of the keys its rows map to at once (SQLAlchemy's
after_flush collects, after_commit publishes; a rollback publishes nothing); waiters re-read on their own timer for
the commits of other server processes.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

ALL = "*"


class CommitWatch:
    """Waiters per key (a machine id, a user id), woken from any thread when a commit touched rows of that key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = f"amtrace_commitwatch_{type(self).__name__}_{id(self)}"

    def keys_of(self, obj: object) -> str | None:
        """The key a changed row wakes (ALL: every key), or None when nobody waits for it."""
        raise NotImplementedError

    def install(self, maker: sessionmaker[Session]) -> None:
        """Listen to every session the app makes."""
        event.listen(maker, "after_flush", self._collect)
        event.listen(maker, "after_commit", self._published)
        event.listen(maker, "after_rollback", lambda s: s.info.pop(self._pending, None))

    def watch(self, key: str) -> asyncio.Event:
        """A waiter for key; register it before reading, so a commit in between is not missed."""
        self._loop = asyncio.get_running_loop()
        waiter = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        return waiter

    def forget(self, key: str, waiter: asyncio.Event) -> None:
        """Drop a waiter."""
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[key]

    def changed(self, keys: set[str]) -> None:
        """Wake the waiters of these keys (ALL: every key); callable from any thread."""
        with self._lock:
            if ALL in keys:
                woken = [w for ws in self._waiters.values() for w in ws]
            else:
                woken = [w for k in keys for w in self._waiters.get(k, ())]
        loop = self._loop
        if woken and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: [w.set() for w in woken])

    def _collect(self, session: Session, _flush_context) -> None:
        touched: set[str] = session.info.setdefault(self._pending, set())
        for obj in (*session.new, *session.dirty, *session.deleted):
            key = self.keys_of(obj)
            if key is not None:
                touched.add(key)

    def _published(self, session: Session) -> None:
        touched = session.info.pop(self._pending, None)
        if touched:
            self.changed(touched)
