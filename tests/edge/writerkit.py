"""Helpers of the InfluxDB writer tests (v1 and v2): outbox blocks, waiting, collected events."""

from __future__ import annotations

import threading
import time

from edge.readings import Event


def as_blocks(all_lines: list[str], per_block: int) -> list[tuple[str, int]]:
    """Group lines into outbox blocks of per_block lines."""
    return [("\n".join(all_lines[i:i + per_block]), len(all_lines[i:i + per_block]))
            for i in range(0, len(all_lines), per_block)]


from waiting import wait_until  # noqa: E402,F401 - the one waiting rule (tests/waiting.py)


class Events:
    """Collects the writer's events (thread-safe)."""

    def __init__(self):
        self.items: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, ev: Event) -> None:
        with self._lock:
            self.items.append(ev)

    def kinds(self) -> list[str]:
        with self._lock:
            return [e.kind for e in self.items]

    def of(self, kind: str) -> list[Event]:
        with self._lock:
            return [e for e in self.items if e.kind == kind]
