"""The durable outbox: line-protocol blocks on disk (SQLite in WAL mode) until InfluxDB confirmed them.

Why SQLite in WAL mode: it is the most widely proven embedded transactional store, ships with
Python (no extra dependency), keeps everything in one file, and its commit is atomic and durable:
a transaction is either wholly on disk or not at all after kill -9 (and, with synchronous=FULL,
after power loss). WAL lets the writer thread read batches while other threads append, and a
whole group of blocks costs one fsync (group commit), which is what makes tens of thousands of
values per second possible with fsync on.

One process opens an outbox at a time (an flock on ``<path>.lock`` enforces it), so the counters
kept in memory (rows, lines, quarantine bytes) are exact. See docs/outbox-and-writer.md.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from edge.readings import OutboxFull

__all__ = ["Outbox", "OutboxRow", "OutboxStats", "QuarantineEntry", "QuarantineFull", "OutboxFull"]

# Rough per-entry bookkeeping bytes (row header, index entry, timestamps) added to the quarantine
# byte counter, so many tiny entries still count against the quarantine bound.
_QUARANTINE_ENTRY_OVERHEAD = 64
# Give freed pages back to the file system only when at least this much is free and it is at least
# a quarter of the file; freed pages are reused by new rows anyway, so this only matters after a
# large backlog drained. Each step is bounded so that delete() stays short.
_VACUUM_MIN_FREE_BYTES = 16 * 1024 * 1024
_VACUUM_STEP_PAGES = 4096


class QuarantineFull(OutboxFull):
    """The quarantine reached its bound: the caller must not acknowledge the input (back-pressure)."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored block: newline-joined line-protocol text and its number of lines."""

    id: int
    data: str
    lines: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Fill state of the outbox: what is pending, bytes in use against the budget, file size on disk."""

    rows: int
    lines: int
    used_bytes: int  # database pages in use (page_count - freelist_count) * page_size
    file_bytes: int  # database file + WAL on disk
    budget_bytes: int
    full: bool  # used_bytes >= budget_bytes: put() raises OutboxFull
    quarantine_entries: int = 0
    quarantine_bytes: int = 0
    quarantine_budget_bytes: int = 0


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """An input kept aside with its reason: malformed payload, or a line InfluxDB refused."""

    id: int
    time_ns: int
    source: str
    origin: str
    machine_id: str | None
    reason: str
    raw: bytes
    size: int


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,          -- rowid: new ids are above every pending id, so id order is age order
    lines INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: an id named in a log stays unambiguous
    time_ns INTEGER NOT NULL,
    source TEXT NOT NULL,
    origin TEXT NOT NULL,
    machine_id TEXT,
    reason TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class Outbox:
    """Durable FIFO of line-protocol blocks plus the quarantine, in one SQLite WAL file; thread-safe."""

    def __init__(
        self,
        path: Path | str,
        *,
        budget_bytes: int,
        fsync: bool = True,
        quarantine_budget_bytes: int | None = None,
        read_only: bool = False,
    ):
        if budget_bytes <= 0:
            raise ValueError("budget_bytes must be positive")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = int(budget_bytes)
        # The quarantine has its own bound, outside the outbox budget, so that it keeps working
        # while the outbox is full (it is what records why data was refused).
        self.quarantine_budget_bytes = int(
            quarantine_budget_bytes if quarantine_budget_bytes is not None
            else max(budget_bytes // 10, 1024 * 1024)
        )
        self.fsync = fsync
        # read_only: for inspection (e.g. `amtrace-edge quarantine`) while the agent runs; takes no
        # lock, refuses every change, and reads its counts from the file at each call.
        self.read_only = read_only
        self._lock_file = None
        if not read_only:
            self._lock_file = open(str(self.path) + ".lock", "a+b")  # noqa: SIM115 - held while open
            try:
                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_file.close()
                raise RuntimeError(f"outbox {self.path} is already open in another process or object") from None

        self._wlock = threading.Lock()  # put, delete, quarantine, meta writes
        self._rlock = threading.Lock()  # take, reads
        self._pending = threading.Condition(threading.Lock())
        self._closed = False

        if read_only:
            self._w = self._r = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        else:
            self._w = self._connect(create=True)
            self._w.executescript(_SCHEMA)
            self._r = self._connect()
        self._page_size = self._w.execute("PRAGMA page_size").fetchone()[0]
        self._load_counts()

    def _load_counts(self) -> None:
        rows, lines = self._w.execute("SELECT count(*), coalesce(sum(lines), 0) FROM outbox").fetchone()
        self._rows, self._lines = rows, lines
        q_rows, q_bytes = self._w.execute(
            "SELECT count(*), coalesce(sum(length(raw) + length(CAST(reason AS BLOB)) + length(CAST(origin AS BLOB))), 0)"
            " FROM quarantine"
        ).fetchone()
        self._q_rows = q_rows
        self._q_bytes = q_bytes + q_rows * _QUARANTINE_ENTRY_OVERHEAD
        self._used = self._used_now()

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0
        )
        if create:
            # auto_vacuum must be chosen before the file gets its first page (switching to WAL
            # writes it); INCREMENTAL lets delete() give freed pages back in small steps.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit (survives power loss). NORMAL: a commit
        # survives a crash or kill -9 of the agent but may be lost on power loss.
        conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
        # After a checkpoint, shrink a WAL that grew during a burst back to 16 MiB.
        conn.execute("PRAGMA journal_size_limit=16777216")
        return conn

    def _used_now(self) -> int:
        # Pages in use, as seen by the write connection (includes pages whose newest copy is in
        # the WAL). Freed pages are excluded, so deleting confirmed rows releases budget at once.
        page_count = self._w.execute("PRAGMA page_count").fetchone()[0]
        free = self._w.execute("PRAGMA freelist_count").fetchone()[0]
        return (page_count - free) * self._page_size

    def _check_open(self, write: bool = False) -> None:
        if self._closed:
            raise RuntimeError(f"outbox {self.path} is closed")
        if write and self.read_only:
            raise RuntimeError(f"outbox {self.path} is opened read-only")

    # -- outbox -----------------------------------------------------------------------------

    def put(self, blocks: Sequence[tuple[str, int]], *, meta: Mapping[str, str | None] | None = None,
            over_budget: bool = False) -> None:
        """Store all blocks in one transaction; return once durable; raise OutboxFull at or over budget.

        meta: agent state written in the same transaction (a value of None deletes the key), so the state and
        the records it describes are durable together. over_budget: store even at the budget (the agent's own
        evidence events: few and small, and they must not wait in memory for the outbox to drain)."""
        if not blocks and not meta:
            return
        rows = []
        added_lines = 0
        for data, lines in blocks:
            if not data or lines < 1 or data.count("\n") + 1 != lines:
                raise ValueError(
                    f"block must hold exactly its {lines} line(s), newline-joined, without a trailing newline"
                )
            rows.append((lines, data))
            added_lines += lines
        with self._wlock:
            self._check_open(write=True)
            if self._used >= self.budget_bytes and not over_budget:
                raise OutboxFull(
                    f"outbox {self.path} is at its disk budget ({self._used} of {self.budget_bytes} bytes in use,"
                    f" {self._lines} lines pending)"
                )
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                w.executemany("INSERT INTO outbox(lines, data) VALUES (?, ?)", rows)
                if meta:
                    self._write_meta(meta)
                w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise
            self._rows += len(rows)
            self._lines += added_lines
            self._used = self._used_now()
        with self._pending:
            self._pending.notify_all()

    def take(self, max_lines: int) -> list[OutboxRow]:
        """Oldest rows up to max_lines in total (at least one row if any); does not delete them."""
        out: list[OutboxRow] = []
        total = 0
        with self._rlock:
            self._check_open()
            cur = self._r.execute("SELECT id, data, lines FROM outbox ORDER BY id")
            try:
                while True:
                    chunk = cur.fetchmany(256)
                    if not chunk:
                        break
                    for row_id, data, lines in chunk:
                        if out and total + lines > max_lines:
                            return out
                        out.append(OutboxRow(row_id, data, lines))
                        total += lines
                    if total >= max_lines:
                        break
            finally:
                cur.close()  # ends the read transaction, so checkpoints are not held back
        return out

    def delete(self, ids: Sequence[int]) -> None:
        """Remove rows InfluxDB confirmed; releases budget at once; occasionally gives space back."""
        if not ids:
            return
        with self._wlock:
            self._check_open(write=True)
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                removed_rows = 0
                removed_lines = 0
                for start in range(0, len(ids), 500):
                    part = list(ids[start:start + 500])
                    marks = ",".join("?" * len(part))
                    n, lines = w.execute(
                        f"SELECT count(*), coalesce(sum(lines), 0) FROM outbox WHERE id IN ({marks})", part
                    ).fetchone()
                    w.execute(f"DELETE FROM outbox WHERE id IN ({marks})", part)
                    removed_rows += n
                    removed_lines += lines
                w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise
            self._rows -= removed_rows
            self._lines -= removed_lines
            self._reclaim()
            self._used = self._used_now()

    def _reclaim(self) -> None:
        free = self._w.execute("PRAGMA freelist_count").fetchone()[0]
        pages = self._w.execute("PRAGMA page_count").fetchone()[0]
        if free * self._page_size >= _VACUUM_MIN_FREE_BYTES and free * 4 >= pages:
            # executescript steps the pragma to completion; execute() would free only one page
            # (the pragma's result rows have no columns, so the cursor stops after the first).
            self._w.executescript(f"PRAGMA incremental_vacuum({_VACUUM_STEP_PAGES});")
            # The file shrinks only when the WAL is checkpointed; do it now (rare: only after a
            # large backlog drained) so the disk space really comes back.
            self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def last_id(self) -> int:
        """Id of the newest row (0 when empty): a mark for delivered_through."""
        with self._rlock:
            self._check_open()
            return self._r.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()[0]

    def delivered_through(self, mark: int) -> bool:
        """True once no row with an id up to mark is left, i.e. InfluxDB confirmed everything stored by then.

        Ids can restart after the outbox was empty; that only delays a True (never gives one too early),
        since a row stored before the mark keeps its id until it is confirmed."""
        with self._rlock:
            self._check_open()
            oldest = self._r.execute("SELECT min(id) FROM outbox").fetchone()[0]
        return oldest is None or oldest > mark

    def wait_for_rows(self, timeout: float) -> bool:
        """Block until the outbox holds at least one row or timeout passes; True if rows are pending."""
        deadline = time.monotonic() + timeout
        with self._pending:
            while self._rows <= 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._pending.wait(left)
            return self._rows > 0

    def stats(self) -> OutboxStats:
        """Rows and lines pending, bytes in use against the budget, file size, quarantine fill."""
        with self._wlock:
            if self.read_only:
                self._check_open()
                self._load_counts()
            rows, lines, used = self._rows, self._lines, self._used
            q_rows, q_bytes = self._q_rows, self._q_bytes
        file_bytes = 0
        for suffix in ("", "-wal"):
            try:
                file_bytes += os.stat(str(self.path) + suffix).st_size
            except FileNotFoundError:
                pass
        return OutboxStats(
            rows=rows, lines=lines, used_bytes=used, file_bytes=file_bytes, budget_bytes=self.budget_bytes,
            full=used >= self.budget_bytes, quarantine_entries=q_rows, quarantine_bytes=q_bytes,
            quarantine_budget_bytes=self.quarantine_budget_bytes,
        )

    # -- quarantine -------------------------------------------------------------------------

    def add_quarantine(
        self, *, source: str, origin: str, raw: bytes, reason: str, machine_id: str | None = None
    ) -> int:
        """Keep a refused input durably with its reason; works when the outbox is full; returns its id."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        size = len(raw) + len(reason.encode("utf-8")) + len(origin.encode("utf-8")) + _QUARANTINE_ENTRY_OVERHEAD
        with self._wlock:
            self._check_open(write=True)
            if self._q_bytes + size > self.quarantine_budget_bytes:
                raise QuarantineFull(
                    f"quarantine in {self.path} is at its bound ({self._q_bytes} of "
                    f"{self.quarantine_budget_bytes} bytes, {self._q_rows} entries); review and remove entries"
                )
            cur = self._w.execute(
                "INSERT INTO quarantine(time_ns, source, origin, machine_id, reason, raw) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time_ns(), source, origin, machine_id, reason, raw),
            )
            self._q_rows += 1
            self._q_bytes += size
            self._used = self._used_now()
            return cur.lastrowid

    def quarantine_entries(
        self, *, limit: int = 100, offset: int = 0, source: str | None = None
    ) -> list[QuarantineEntry]:
        """Quarantined inputs, newest first, optionally only those of one source."""
        sql = "SELECT id, time_ns, source, origin, machine_id, reason, raw FROM quarantine"
        args: list = []
        if source is not None:
            sql += " WHERE source = ?"
            args.append(source)
        sql += " ORDER BY id DESC LIMIT ? OFFSET ?"
        args += [limit, offset]
        with self._rlock:
            self._check_open()
            rows = self._r.execute(sql, args).fetchall()
        return [
            QuarantineEntry(i, t, s, o, m, r, bytes(raw), len(raw)) for i, t, s, o, m, r, raw in rows
        ]

    def quarantine_count(self) -> int:
        """Number of quarantined entries."""
        with self._wlock:
            if self.read_only:
                self._check_open()
                self._load_counts()
            return self._q_rows

    def remove_quarantine(self, ids: Sequence[int]) -> int:
        """Remove reviewed quarantine entries (e.g. after they were corrected and re-sent); returns how many."""
        if not ids:
            return 0
        with self._wlock:
            self._check_open(write=True)
            removed = 0
            w = self._w
            w.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), 500):
                    part = list(ids[start:start + 500])
                    marks = ",".join("?" * len(part))
                    n, size = w.execute(
                        "SELECT count(*), coalesce(sum(length(raw) + length(CAST(reason AS BLOB))"
                        f" + length(CAST(origin AS BLOB))), 0) FROM quarantine WHERE id IN ({marks})",
                        part,
                    ).fetchone()
                    w.execute(f"DELETE FROM quarantine WHERE id IN ({marks})", part)
                    removed += n
                    self._q_bytes -= size + n * _QUARANTINE_ENTRY_OVERHEAD
                w.execute("COMMIT")
            except BaseException:
                if w.in_transaction:
                    w.execute("ROLLBACK")
                raise
            self._q_rows -= removed
            self._used = self._used_now()
            return removed

    # -- meta -------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        """Read a small piece of agent state stored beside the outbox."""
        with self._rlock:
            self._check_open()
            row = self._r.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else row[0]

    def meta_items(self, prefix: str) -> dict[str, str]:
        """Every piece of agent state whose key starts with prefix."""
        with self._rlock:
            self._check_open()
            rows = self._r.execute("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
                                   (len(prefix), prefix)).fetchall()
        return dict(rows)

    def set_meta(self, key: str, value: str | None) -> None:
        """Store a small piece of agent state durably (replaces the old value; None deletes it)."""
        with self._wlock:
            self._check_open(write=True)
            self._write_meta({key: value})

    def _write_meta(self, meta: Mapping[str, str | None]) -> None:
        """Upsert or delete meta keys on the write connection (the caller holds _wlock)."""
        gone = [(k,) for k, v in meta.items() if v is None]
        kept = [(k, v) for k, v in meta.items() if v is not None]
        if gone:
            self._w.executemany("DELETE FROM meta WHERE key = ?", gone)
        if kept:
            self._w.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                kept)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Checkpoint the WAL into the database file and close; pending rows stay for the next start."""
        with self._wlock, self._rlock:
            if self._closed:
                return
            self._closed = True
            if not self.read_only:
                try:
                    self._w.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                except sqlite3.Error:
                    pass  # best effort: the WAL is replayed at the next open anyway
            self._r.close()
            self._w.close()
            if self._lock_file is not None:
                self._lock_file.close()
        with self._pending:
            self._pending.notify_all()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
