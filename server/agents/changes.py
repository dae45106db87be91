"""Context changes: a commit that touches what a machine's context is made of wakes that machine's long polls.

The agents learn their context (job, devices, cycles, open nonconformities, approved files, qualification) by a long poll
(GET …/context?wait_s=…&known=<etag>): the server answers as soon as the context differs from the one the
agent holds. A commit wakes the waiting polls at once: within one server process by SQLAlchemy's after_commit, on
PostgreSQL in every other instance by LISTEN/NOTIFY (server/commitwatch.py); a waiting poll also re-reads every
RECHECK_S (SQLite with several processes, or a listener reconnecting).
"""

from __future__ import annotations

from server.commitwatch import ALL, CommitWatch
from server.models import (CycleLoadItem, Design, DesignFile, DesignIteration, Device, Job, MaterialLot,
                           Nonconformity, ProcessCycle, QualificationScope)

# The rows a context is made of. A change to one with a machine_id wakes that machine; one without (a device,
# a design file) wakes every machine: rare, and a woken poll that finds no change just waits again.
WATCHED = (Job, Device, ProcessCycle, CycleLoadItem, Nonconformity, Design, DesignIteration, DesignFile,
           QualificationScope, MaterialLot)
# How often a waiting poll re-reads anyway, in case a wake-up was missed.
RECHECK_S = 5.0


class ContextChanges(CommitWatch):
    """Waiters per machine, woken from any thread when a commit changed a watched row."""

    channel = "amtrace_context"

    def __init__(self) -> None:
        super().__init__()
        self.recheck_s = RECHECK_S

    def keys_of(self, obj: object) -> str | None:
        """A watched row wakes its machine's waiters, or every machine's when it names none."""
        return (getattr(obj, "machine_id", None) or ALL) if isinstance(obj, WATCHED) else None
