"""Waking waiters when a commit changed what they wait for: the base of the agents' context long poll and the
people's notification stream.

Within one server process a commit wakes the waiters of the keys its rows map to at once (SQLAlchemy's
after_flush collects, after_commit publishes; a rollback publishes nothing). On PostgreSQL the same keys go to every
other server instance too: each flush that touches a key sends `pg_notify(channel, key)` in its transaction
(PostgreSQL delivers it only if the transaction commits, once per distinct payload), and each instance listens on
the channel (`listen`, a task of the app's lifespan). Waiters still re-read on their own timer, so a lost
notification (a listener reconnecting) delays a wake-up, never loses a change.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

ALL = "*"
log = logging.getLogger(__name__)


class CommitWatch:
    """Waiters per key (a machine id, a user id), woken from any thread when a commit touched rows of that key."""

    channel = ""  # the PostgreSQL NOTIFY channel of this kind of change (set by each subclass)

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
        event.listen(maker, "after_rollback", lambda s: (s.info.pop(self._pending, None),
                                                         s.info.pop(self._pending + "_sent", None)))

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
        if self.channel and touched and session.get_bind().dialect.name == "postgresql":
            sent: set[str] = session.info.setdefault(self._pending + "_sent", set())
            for key in sorted(touched - sent):
                session.connection().exec_driver_sql("SELECT pg_notify(%s, %s)", (self.channel, key))
            sent |= touched

    def _published(self, session: Session) -> None:
        session.info.pop(self._pending + "_sent", None)
        touched = session.info.pop(self._pending, None)
        if touched:
            self.changed(touched)

    async def listen(self, database_url: str, retry_s: float = 2.0) -> None:
        """Wake this instance's waiters for the commits of every other instance (PostgreSQL; until cancelled)."""
        import psycopg
        from sqlalchemy.engine import make_url

        self._loop = asyncio.get_running_loop()
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    async for note in conn.notifies():
                        self.changed({note.payload})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the waiters' own re-reads cover the gap; try again
                log.warning("listening for %s on PostgreSQL failed (%s); again in %.0f s", self.channel, e, retry_s)
                await asyncio.sleep(retry_s)
