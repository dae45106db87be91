"""Fixtures of the OPC UA suite: free loopback ports, an in-test durable sink, certificates made once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from edge.readings import Event, Ingest, MemoryJournal
from opcua_helpers import free_port




class SqliteSink(MemoryJournal):
    """A small durable ReadingSink for tests: every reading and event in SQLite (WAL), plus lists in memory."""

    def __init__(self, path: Path):
        super().__init__()
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute(
            "create table readings(machine text, signal text, value text, source_ts_ns integer, quality text,"
            " status text, received_ns integer)"
        )
        self.db.execute("create table events(machine text, kind text, message text, ts_ns integer, fields text)")
        self.ingests: list[Ingest] = []
        self.events: list[Event] = []
        self.submits = 0
        self.lock = threading.Lock()

    def submit(self, ingests, *, state=None) -> None:
        with self.lock:
            self.submits += 1
            self.keep_state(state)
            rows = [
                (i.machine_id, r.signal, repr(r.value), r.source_ts_ns, r.quality, r.status, i.received_ns)
                for i in ingests for r in i.readings
            ]
            self.db.executemany("insert into readings values (?,?,?,?,?,?,?)", rows)
            self.db.commit()
            self.ingests.extend(ingests)

    def quarantine(self, *, source, origin, raw, reason, machine_id=None) -> None:
        raise AssertionError(f"unexpected quarantine: {reason}")

    def event(self, event: Event) -> None:
        with self.lock:
            self.db.execute(
                "insert into events values (?,?,?,?,?)",
                (event.machine_id, event.kind, event.message, event.ts_ns, repr(event.fields)),
            )
            self.db.commit()
            self.events.append(event)

    def readings(self, signal: str | None = None):
        """All readings received (optionally of one signal), in arrival order."""
        with self.lock:
            return [r for i in self.ingests for r in i.readings if signal is None or r.signal == signal]

    def kinds(self, kind: str) -> list[Event]:
        """Events of one kind."""
        with self.lock:
            return [e for e in self.events if e.kind == kind]


@pytest.fixture
def sink(tmp_path) -> SqliteSink:
    """A fresh durable test sink."""
    s = SqliteSink(tmp_path / "sink.sqlite")
    yield s
    s.db.close()


@pytest.fixture
def port() -> int:
    """A free loopback port."""
    return free_port()
