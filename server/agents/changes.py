"""Context changes: a commit that touches what a machine's context is made of wakes that machine's long polls.

The agents learn their context (job, devices, cycles, open nonconformities, approved files, qualification) by a long poll
(GET …/context?wait_s=…&known=<etag>): the server answers as soon as the context differs from the one the
agent holds. Within one server process a commit wakes the waiting polls at once (SQLAlchemy's after_commit);
commits made by another server process are seen by the waiting poll's own re-read every RECHECK_S.
"""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from server.models import (CycleLoadItem, Design, DesignFile, DesignIteration, Device, Job, MaterialLot,
                           Nonconformity, ProcessCycle, QualificationScope)

# The rows a context is made of. A change to one with a machine_id wakes that machine; one without (a device,
# a design file) wakes every machine: rare, and a woken poll that finds no change just waits again.
WATCHED = (Job, Device, ProcessCycle, CycleLoadItem, Nonconformity, Design, DesignIteration, DesignFile,
           QualificationScope, MaterialLot)
# How often a waiting poll re-reads anyway: commits of other server processes do not wake it.
RECHECK_S = 5.0
_PENDING = "amtrace_context_changes"
ALL = "*"


class ContextChanges:
    """Waiters per machine, woken from any thread when a commit changed a watched row."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.recheck_s = RECHECK_S

    def install(self, maker: sessionmaker[Session]) -> None:
        """Listen to every session the app makes."""
        event.listen(maker, "after_flush", self._collect)
        event.listen(maker, "after_commit", self._published)
        event.listen(maker, "after_rollback", lambda s: s.info.pop(_PENDING, None))

    def watch(self, machine_id: str) -> asyncio.Event:
        """A waiter for machine_id; register it before reading, so a commit in between is not missed."""
        self._loop = asyncio.get_running_loop()
        waiter = asyncio.Event()
        with self._lock:
            self._waiters.setdefault(machine_id, set()).add(waiter)
        return waiter

    def forget(self, machine_id: str, waiter: asyncio.Event) -> None:
        """Drop a waiter."""
        with self._lock:
            waiters = self._waiters.get(machine_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[machine_id]

    def changed(self, machine_ids: set[str]) -> None:
        """Wake the waiters of these machines (ALL: every machine); callable from any thread."""
        with self._lock:
            if ALL in machine_ids:
                woken = [w for ws in self._waiters.values() for w in ws]
            else:
                woken = [w for m in machine_ids for w in self._waiters.get(m, ())]
        loop = self._loop
        if woken and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(lambda: [w.set() for w in woken])

    @staticmethod
    def _collect(session: Session, _flush_context) -> None:
        touched: set[str] = session.info.setdefault(_PENDING, set())
        for obj in (*session.new, *session.dirty, *session.deleted):
            if isinstance(obj, WATCHED):
                touched.add(getattr(obj, "machine_id", None) or ALL)

    def _published(self, session: Session) -> None:
        touched = session.info.pop(_PENDING, None)
        if touched:
            self.changed(touched)
