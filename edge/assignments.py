"""Which job, and so which device codes, is on each machine at a given moment.

Until the central server is the source, operators (or `amtrace-edge assign`) set assignments
through the agent's local HTTP API; they are kept append-only in a SQLite file so that a
reading is tagged with the job that ran at the reading's own time, even when it arrives late
(a redelivered MQTT message, a replayed outbox). The server becomes the source later through
the same `assign`/`release` calls."""

from __future__ import annotations

import bisect
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AssignmentRequest(BaseModel):
    """Body of PUT /machines/{id}/assignment: the job now on the machine and its devices."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/\-]+$", description="Job id")
    devices: list[str] = Field(
        min_length=1, max_length=1000,
        description="Unique device codes on the job (GS1 element strings or internal serials)",
    )
    start_ns: int | None = Field(default=None, description="Start of the assignment; default now")
    source: str = Field(default="local", description="Who set it: local, cli, server")
    force: bool = Field(default=False, description=(
        "Override the server on a machine whose jobs come from it (needs a reason; recorded as an event)"))
    reason: str | None = Field(default=None, max_length=500, description="Why the server is overridden")


@dataclass(frozen=True)
class Assignment:
    """A job on a machine from start_ns until end_ns (None = still running)."""

    machine: str
    job: str
    devices: tuple[str, ...]
    start_ns: int
    end_ns: int | None = None
    source: str = "local"

    def as_dict(self) -> dict:
        """JSON-friendly form."""
        return {"machine": self.machine, "job": self.job, "devices": list(self.devices),
                "start_ns": self.start_ns, "end_ns": self.end_ns, "source": self.source}


@dataclass
class _Timeline:
    starts: list[int] = field(default_factory=list)
    items: list[Assignment] = field(default_factory=list)


class AssignmentBook:
    """Append-only record of job assignments per machine, answering 'what ran at time t?'."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS assignment (id INTEGER PRIMARY KEY, machine TEXT NOT NULL,"
            " job TEXT NOT NULL, devices TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER,"
            " source TEXT NOT NULL)"
        )
        self._timelines: dict[str, _Timeline] = {}
        for row in self._db.execute(
            "SELECT machine, job, devices, start_ns, end_ns, source FROM assignment ORDER BY start_ns, id"
        ):
            self._index(Assignment(row[0], row[1], tuple(json.loads(row[2])), row[3], row[4], row[5]))

    def _index(self, a: Assignment) -> None:
        tl = self._timelines.setdefault(a.machine, _Timeline())
        i = bisect.bisect_right(tl.starts, a.start_ns)
        tl.starts.insert(i, a.start_ns)
        tl.items.insert(i, a)

    def assign(self, machine: str, request: AssignmentRequest) -> Assignment:
        """Put a job on a machine from now (or start_ns); the previous one ends there."""
        start = request.start_ns or time.time_ns()
        devices = tuple(dict.fromkeys(request.devices))  # keep order, drop repeats
        with self._lock:
            current = self._current(machine)
            if current is not None and start <= current.start_ns:
                raise ValueError(
                    f"machine {machine}: new assignment would start before the current job "
                    f"{current.job} (started {current.start_ns})"
                )
            last = self._latest(machine)
            if current is None and last is not None and start < last.end_ns:
                # Inserted before the last ended job, it would overlap it and never be "current".
                raise ValueError(
                    f"machine {machine}: new assignment would start at {start}, before job {last.job} "
                    f"ended ({last.end_ns})")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if current is not None:
                    self._end(current, start)
                self._db.execute(
                    "INSERT INTO assignment (machine, job, devices, start_ns, end_ns, source) VALUES (?,?,?,?,NULL,?)",
                    (machine, request.job, json.dumps(list(devices)), start, request.source),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            a = Assignment(machine, request.job, devices, start, None, request.source)
            self._index(a)
            return a

    def release(self, machine: str, end_ns: int | None = None) -> Assignment | None:
        """End the job on a machine (now or at end_ns); return the ended assignment or None."""
        end = end_ns or time.time_ns()
        with self._lock:
            current = self._current(machine)
            if current is None:
                return None
            self._db.execute("BEGIN IMMEDIATE")
            try:
                ended = self._end(current, end)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return ended

    def _end(self, a: Assignment, end_ns: int) -> Assignment:
        self._db.execute(
            "UPDATE assignment SET end_ns=? WHERE machine=? AND start_ns=? AND end_ns IS NULL",
            (end_ns, a.machine, a.start_ns),
        )
        tl = self._timelines[a.machine]
        i = tl.items.index(a)
        ended = Assignment(a.machine, a.job, a.devices, a.start_ns, end_ns, a.source)
        tl.items[i] = ended
        return ended

    def _latest(self, machine: str) -> Assignment | None:
        tl = self._timelines.get(machine)
        return tl.items[-1] if tl and tl.items else None

    def earliest_start(self, machine: str, wanted_ns: int | None) -> int | None:
        """wanted_ns, moved after the machine's latest assignment if it would overlap it (None stays None)."""
        with self._lock:
            last = self._latest(machine)
        if wanted_ns is None or last is None:
            return wanted_ns
        floor = last.start_ns + 1 if last.end_ns is None else last.end_ns
        return max(wanted_ns, floor)

    def _current(self, machine: str) -> Assignment | None:
        tl = self._timelines.get(machine)
        if tl and tl.items and tl.items[-1].end_ns is None:
            return tl.items[-1]
        return None

    def current(self, machine: str) -> Assignment | None:
        """The job on the machine now, if any."""
        with self._lock:
            return self._current(machine)

    def active_at(self, machine: str, ts_ns: int) -> Assignment | None:
        """The job that was on the machine at ts_ns, if any (start inclusive, end exclusive)."""
        tl = self._timelines.get(machine)
        if not tl:
            return None
        i = bisect.bisect_right(tl.starts, ts_ns) - 1
        if i < 0:
            return None
        a = tl.items[i]
        if a.end_ns is not None and ts_ns >= a.end_ns:
            return None
        return a

    def history(self, machine: str | None = None) -> list[Assignment]:
        """Every assignment, oldest first (optionally of one machine)."""
        with self._lock:
            tls = [self._timelines[machine]] if machine in self._timelines else (
                [] if machine else list(self._timelines.values()))
            return sorted((a for tl in tls for a in tl.items), key=lambda a: a.start_ns)

    def close(self) -> None:
        """Close the database."""
        self._db.close()
