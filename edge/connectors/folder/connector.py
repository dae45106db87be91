"""Cycle-log folder connector: each stable file becomes samples in the outbox, exactly once, then moves to done/.

Exactly once across an agent kill: the file's SHA-256 is stored in the outbox in the same transaction as its
samples (sink.submit(state=...)); a file whose hash is already there was stored before the kill and is only
moved. A file that breaks a rule goes to quarantine/ with the line and column at fault (and into the agent's
quarantine with its first 64 KiB). While the outbox is full the file simply stays where the machine put it:
the folder is the upstream that holds it."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from edge.config import MachineConfig
from edge.connectors.base import ConnectorError, TaskConnector
from edge.connectors.folder.config import FolderConfig
from edge.connectors.folder.parse import LogError, parse
from edge.readings import Event, Ingest, OutboxFull, ReadingSink

log = logging.getLogger("amtrace.folder")

QUARANTINE_BYTES = 64 * 1024


@dataclass
class FolderStats:
    """Counters shown in the agent's status."""

    files_stored: int = 0
    files_refused: int = 0
    samples_stored: int = 0


class FolderConnector(TaskConnector):
    """Watches one machine's cycle-log folder and stores every complete log once."""

    type = "folder"
    reports_changes_only = True

    def __init__(self, machine: MachineConfig, sink: ReadingSink, *, agent_id: str = "edge"):
        super().__init__(machine, sink)
        if not isinstance(machine.connection, FolderConfig):
            raise ConnectorError(f"machine {machine.id}: connection type is {machine.connection.type}, not folder")
        self.config: FolderConfig = machine.connection
        self.folder = Path(self.config.path)
        self.done = self.folder / "done"
        self.refused = self.folder / "quarantine"
        self.stats = FolderStats()
        self._prefix = f"folder:{machine.id}:sha256:"
        self._stored: set[str] = set()
        self._pending: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, unchanged since)
        self._link_key = f"folder_link:{machine.id}"
        self._backpressure_key = f"backpressure:{machine.id}"
        self.state.detail = {"folder": str(self.folder), "format": self.config.format}

    async def prepare(self) -> None:
        """Read which logs the outbox holds already (by content hash)."""
        saved = await asyncio.to_thread(self.sink.saved_state, self._prefix)
        self._stored = {k[len(self._prefix):] for k in saved}

    async def run(self) -> None:
        """Look at the folder every poll_interval_s until stopped; a failed look is logged, not fatal."""
        while not self.stopping:
            try:
                await self._scan()
            except OSError as e:
                await self._unreachable(f"folder {self.folder} cannot be read: {e.strerror or e}")
            except Exception:  # noqa: BLE001 - one bad scan must not end the watching
                log.exception("%s: scanning %s failed", self.machine.id, self.folder)
            await self.sleep(self.config.poll_interval_s)

    async def _scan(self) -> None:
        names = await asyncio.to_thread(self._listing)
        await self._reachable()
        now = time.monotonic()
        for name, size, mtime in names:
            seen = self._pending.get(name)
            if seen is None or seen[:2] != (size, mtime):
                self._pending[name] = (size, mtime, now)  # new or still being written
                continue
            if now - seen[2] < self.config.stable_s:
                continue
            if await self._take(self.folder / name, size):
                self._pending.pop(name, None)
            if self.stopping:
                return
        listed = {n for n, _, _ in names}
        for gone in [n for n in self._pending if n not in listed]:
            del self._pending[gone]

    def _listing(self) -> list[tuple[str, int, int]]:
        for sub in (self.done, self.refused):
            try:
                sub.mkdir(exist_ok=True)
            except FileExistsError:
                pass  # not a folder: the move says so, and the file stays where it is
        out = []
        with os.scandir(self.folder) as it:
            for entry in it:
                if not entry.is_file(follow_symlinks=False) or entry.name.startswith("."):
                    continue
                if any(fnmatch.fnmatch(entry.name.lower(), p.lower()) for p in self.config.patterns):
                    st = entry.stat(follow_symlinks=False)
                    out.append((entry.name, st.st_size, st.st_mtime_ns))
        return sorted(out)

    async def _take(self, path: Path, size: int) -> bool:
        """Store one stable file (or finish one stored before a kill); True when it left the folder."""
        if size > self.config.max_bytes:
            return await self._refuse(path, await asyncio.to_thread(_head, path),
                                      f"{size} bytes, more than max_bytes {self.config.max_bytes}; not read")
        data = await asyncio.to_thread(path.read_bytes)
        if len(data) > self.config.max_bytes:  # grew since it was stable: a writer we did not see
            return False
        digest = hashlib.sha256(data).hexdigest()
        if digest not in self._stored:
            try:
                samples = parse(data, self.config, self.machine.signals, now_ns=time.time_ns())
            except LogError as e:
                return await self._refuse(path, data[:QUARANTINE_BYTES], str(e))
            received = time.time_ns()
            ingests = [Ingest(self.machine.id, s.readings, received_ns=received, origin=f"{path.name}:{s.line}")
                       for s in samples if s.readings]
            note = json.dumps({"file": path.name, "samples": len(samples), "stored_ns": received})
            try:
                await asyncio.to_thread(self.sink.submit, ingests, state={self._prefix + digest: note})
            except OutboxFull:
                await self._full(path.name)
                return False
            await self._drained()
            self._stored.add(digest)
            self.stats.files_stored += 1
            self.stats.samples_stored += len(samples)
            first, last = samples[0].ts_ns, samples[-1].ts_ns
            await self._record(Event(
                self.machine.id, "cycle_log_stored", f"{path.name}: {len(samples)} samples "
                f"({sum(len(i.readings) for i in ingests)} values) from {_iso(first)} to {_iso(last)} stored",
                received, "info", {"file": path.name, "sha256": digest, "samples": len(samples),
                                   "start_ns": first, "end_ns": last}))
        else:
            log.info("%s: %s was stored before (sha256 %s…); moving it to done/", self.machine.id, path.name,
                     digest[:12])
        return await self._move(path, self.done)

    async def _refuse(self, path: Path, head: bytes, reason: str) -> bool:
        self.stats.files_refused += 1
        log.error("%s: cycle log %s refused: %s", self.machine.id, path.name, reason)
        await asyncio.to_thread(self.sink.quarantine, source="folder", origin=str(path), raw=head,
                                reason=f"cycle log {path.name} refused: {reason}", machine_id=self.machine.id)
        await self._record(Event(self.machine.id, "cycle_log_refused", f"cycle log {path.name} refused: {reason}; "
                                 f"moved to {self.refused.name}/", time.time_ns(), "alarm",
                                 {"file": path.name, "reason": reason}))
        return await self._move(path, self.refused)

    async def _move(self, path: Path, folder: Path) -> bool:
        target = folder / path.name
        if target.exists():
            target = folder / f"{path.stem}.{time.time_ns()}{path.suffix}"
        try:
            await asyncio.to_thread(os.replace, path, target)
            return True
        except OSError as e:
            # The samples are stored (or the refusal recorded): the move is tried again at every scan.
            self.state.last_error = f"cannot move {path.name} to {folder}: {e.strerror or e}"
            log.error("%s: %s", self.machine.id, self.state.last_error)
            return False

    async def _full(self, name: str) -> None:
        # Opened once (the sink stores nothing when the condition is open already); the file waits upstream.
        await self.durably(self.sink.open_condition, self._backpressure_key, Event(
            self.machine.id, "backpressure", f"the outbox is full: cycle log {name} waits in the folder",
            time.time_ns(), "warning"))

    async def _drained(self) -> None:
        now = time.time_ns()
        await self.durably(self.sink.close_condition, self._backpressure_key, lambda since: Event(
            self.machine.id, "backpressure_cleared", "the outbox takes data again; waiting cycle logs are stored",
            now, "info", {"since_ns": since}))

    async def _unreachable(self, reason: str) -> None:
        if self.state.connected or self.state.last_error is None:
            log.warning("%s: %s", self.machine.id, reason)
            await self.durably(self.sink.open_condition, self._link_key, Event(
                self.machine.id, "connection_lost", reason, time.time_ns(), "warning", {"folder": str(self.folder)}))
        self.state.connected = False
        self.state.last_error = reason

    async def _reachable(self) -> None:
        if self.state.connected:
            return
        now = time.time_ns()
        self.state.connected, self.state.since_ns, self.state.last_error = True, now, None
        await self.durably(self.sink.close_condition, self._link_key, lambda since: Event(
            self.machine.id, "connection_restored", f"folder {self.folder} readable again after "
            f"{(now - since) / 1e9:.1f} s; logs written meanwhile are taken now", now, "info",
            {"folder": str(self.folder), "down_since_ns": since}))

    async def _record(self, event: Event) -> None:
        await self.durably(self.sink.event, event)


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(QUARANTINE_BYTES)


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))
