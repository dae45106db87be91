"""In-process store of live machine state and a broadcaster for server-sent-event subscribers.

One store per server process: with several instances behind a load balancer, each dashboard sees only
the machines whose agents reached its instance (see server/ui/README.md, "Known limits")."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import ValidationError

from server.live.schemas import LiveMachine, LiveMachineReport

OFFLINE_AFTER = timedelta(seconds=60)  # three missed heartbeats at the agent's default 20 s period


def _now() -> datetime:
    return datetime.now(timezone.utc)


class LiveMachineStates:
    """Latest reported state per machine; subscribers get every change (thread-safe: heartbeats arrive in
    FastAPI's worker threads, subscribers live on the event loop)."""

    def __init__(self, *, offline_after: timedelta = OFFLINE_AFTER) -> None:
        self._lock = threading.Lock()
        self._machines: dict[str, LiveMachine] = {}
        self._received: dict[str, datetime] = {}
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = set()
        self.offline_after = offline_after

    def apply_heartbeat(self, *, agent: str, allowed_machine_ids: frozenset[str],
                        status: dict[str, Any]) -> list[str]:
        """Take status.machines from a heartbeat; return one problem sentence per entry that was refused."""
        machines = status.get("machines")
        if machines is None:
            return []
        if not isinstance(machines, dict):
            return ["status.machines must be an object keyed by machine id"]
        problems: list[str] = []
        changed: list[LiveMachine] = []
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
            progress = None
            if report.layer is not None and report.layers_total:
                progress = round(100.0 * report.layer / report.layers_total, 1)
            live = LiveMachine(**report.model_dump(), machine_id=machine_id, agent=agent,
                               received_at=now.isoformat(), progress_pct=progress)
            with self._lock:
                self._machines[machine_id] = live
                self._received[machine_id] = now
            changed.append(live)
        for live in changed:
            self._publish(live)
        return problems

    def snapshot(self) -> dict[str, LiveMachine]:
        """Every machine's latest state; one not heard from within the offline limit reads as offline."""
        now = _now()
        with self._lock:
            items = list(self._machines.items())
            received = dict(self._received)
        return {m: self._aged(live, now - received[m]) for m, live in items}

    def _aged(self, live: LiveMachine, age: timedelta) -> LiveMachine:
        if age <= self.offline_after:
            return live
        return live.model_copy(update={"state": "offline", "connected": False, "stale": True})

    def stale_since_last_look(self, seen_stale: set[str]) -> list[LiveMachine]:
        """Machines that went stale and are not yet in seen_stale (which is updated)."""
        out = []
        for m, live in self.snapshot().items():
            if live.stale and m not in seen_stale:
                seen_stale.add(m)
                out.append(live)
            elif not live.stale:
                seen_stale.discard(m)
        return out

    def subscribe(self) -> asyncio.Queue:
        """A queue on the running event loop that receives every changed machine."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        """Stop sending to queue."""
        with self._lock:
            self._subscribers = {(lp, q) for lp, q in self._subscribers if q is not queue}

    def _publish(self, live: LiveMachine) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, live)
            except RuntimeError:  # the subscriber's loop has closed; it will unsubscribe itself
                pass


def _offer(queue: asyncio.Queue, live: LiveMachine) -> None:
    # A dashboard that cannot keep up loses intermediate states, never the server's memory: the
    # next event or a reload brings it the latest state.
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(live)
