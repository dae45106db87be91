"""Live machine state in the database, and a per-process feed that pushes its changes to server-sent-event streams.

The state sits in `live_machine_states` (one row per machine, written by the heartbeat's transaction), so every
server instance on the same database sees every agent, whichever instance the agent reached. Each instance polls
that small table (one row per machine) every POLL_SECONDS while a dashboard listens, and sends what changed.
Polling rather than PostgreSQL LISTEN/NOTIFY: it works the same on SQLite and PostgreSQL, a missed notification
cannot lose a change, and at 200 machines it is one indexed read of a few hundred kB every half second per
instance (docs/decisions.md, "Live state in the database")."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server.db import session_scope
from server.live.schemas import SILENT_AFTER_S, LiveMachine, LiveMachineReport
from server.models import LiveMachineState

log = logging.getLogger(__name__)

OFFLINE_AFTER = timedelta(seconds=60)  # the agent's heartbeat is every 2 s by default: 60 s is many missed ones
POLL_SECONDS = 0.5


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def apply_heartbeat(session: Session, *, agent: str, allowed_machine_ids: frozenset[str],
                    status: dict[str, Any]) -> list[str]:
    """Store status.machines from a heartbeat; return one problem sentence per entry that was refused."""
    machines = status.get("machines")
    if machines is None:
        return []
    if not isinstance(machines, dict):
        return ["status.machines must be an object keyed by machine id"]
    problems: list[str] = []
    now = _now()
    for machine_id, raw in machines.items():
        if machine_id not in allowed_machine_ids:
            problems.append(f"status.machines.{machine_id}: agent {agent} is not scoped to this machine")
            continue
        try:
            report = LiveMachineReport.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            problems.append(f"status.machines.{machine_id}{'.' + where if where else ''}: {first['msg']}")
            continue
        row = session.get(LiveMachineState, machine_id)
        stored = report.model_dump(mode="json")
        if report.trends is None and row is not None:
            stored["trends"] = row.report.get("trends")  # trends come every few heartbeats: keep the last ones
        if row is None:
            session.add(LiveMachineState(machine_id=machine_id, agent=agent, report=stored, received_at=now))
        else:
            row.agent, row.report, row.received_at = agent, stored, now
    return problems


def _live(row: LiveMachineState, now: datetime, offline_after: timedelta) -> LiveMachine:
    report = LiveMachineReport.model_validate(row.report)
    received = _aware(row.received_at)
    progress = None
    if report.layer is not None and report.layers_total:
        progress = round(100.0 * report.layer / report.layers_total, 1)
    silent = None
    if report.last_data_ns is not None:
        age = (now.timestamp() * 1e9 - report.last_data_ns) / 1e9
        silent = round(age, 1) if age > SILENT_AFTER_S else None
    live = LiveMachine(**report.model_dump(), machine_id=row.machine_id, agent=row.agent,
                       received_at=received.isoformat(), progress_pct=progress, silent_s=silent)
    if now - received > offline_after:
        # The agent is silent: what it last said is no longer the machine's state.
        live = live.model_copy(update={"state": "offline", "connected": False, "stale": True})
    return live


def snapshot(session: Session, *, offline_after: timedelta = OFFLINE_AFTER) -> dict[str, LiveMachine]:
    """Every machine's latest state; one whose agent was not heard from within the offline limit reads as offline."""
    now = _now()
    return {row.machine_id: _live(row, now, offline_after)
            for row in session.scalars(select(LiveMachineState).order_by(LiveMachineState.machine_id))}


def _fingerprint(live: LiveMachine) -> tuple:
    # What makes a machine worth sending again: a new report, going stale, or its silence crossing the limit.
    return live.received_at, live.stale, live.silent_s is None


class LiveFeed:
    """This process's pusher: polls the live state table while anyone listens and offers each changed machine to
    every subscriber (a queue on the event loop)."""

    def __init__(self, maker: sessionmaker[Session], *, offline_after: timedelta = OFFLINE_AFTER,
                 poll_seconds: float = POLL_SECONDS) -> None:
        self.maker = maker
        self.offline_after = offline_after
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._subscribers: set[asyncio.Queue] = set()
        self._seen: dict[str, tuple] = {}
        self._task: asyncio.Task | None = None

    def read(self) -> dict[str, LiveMachine]:
        """Every machine's state, read now."""
        with session_scope(self.maker) as session:
            return snapshot(session, offline_after=self.offline_after)

    async def subscribe(self) -> asyncio.Queue:
        """A queue that receives every machine whose state changed; starts the poller when it is the first.

        The poller's baseline is read here, before the subscriber reads its snapshot: a change between the two
        is then sent again (harmless), never lost."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.add(queue)
        if self._task is None or self._task.done():
            baseline = await asyncio.to_thread(self.read)
            if self._task is None or self._task.done():
                self._seen = {m: _fingerprint(s) for m, s in baseline.items()}
                self._task = asyncio.get_running_loop().create_task(self._poll())
        return queue

    def subscribers(self) -> int:
        """How many streams listen on this process now."""
        with self._lock:
            return len(self._subscribers)

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        """Stop sending to queue."""
        with self._lock:
            self._subscribers.discard(queue)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            with self._lock:
                if not self._subscribers:
                    return
            try:
                machines = await asyncio.to_thread(self.read)
            except Exception as e:  # noqa: BLE001 - a database hiccup must not end the feed; said in the log
                log.warning("live state poll failed: %s", e)
                continue
            changed = [s for m, s in machines.items() if self._seen.get(m) != _fingerprint(s)]
            self._seen = {m: _fingerprint(s) for m, s in machines.items()}
            with self._lock:
                subscribers = list(self._subscribers)
            for live in changed:
                for queue in subscribers:
                    _offer(queue, live)


def _offer(queue: asyncio.Queue, live: LiveMachine) -> None:
    # A dashboard that cannot keep up loses intermediate states, never the server's memory: the
    # next event or a reload brings it the latest state.
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(live)
