"""What the dashboard and the server link see of each machine right now, kept from the readings as they pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from edge.readings import Event, Ingest

# Conditions that stay on the dashboard until the event that clears them (raised kind -> clearing kind), rather
# than scrolling away behind newer alerts: a machine whose identity cannot be read stays "requalification
# triggers are blind" for as long as it is so.
STANDING = {"identity_unknown": "identity"}


@dataclass
class MachineLive:
    """What the dashboard shows about one machine, kept from the readings as they pass."""

    layer: int | None = None
    layers_total: int | None = None
    machine_state: str | None = None
    alerts: list[dict] = field(default_factory=list)
    standing: dict[str, dict] = field(default_factory=dict)  # conditions shown until cleared (see STANDING)
    updated_ns: int | None = None


class LiveState:
    """The latest values of the signals that carry a live role (layer, state …), per machine."""

    def __init__(self, machines):
        self.roles = {m.id: {s.name: s.role for s in m.signals if getattr(s, "role", None)} for m in machines}
        self.machines: dict[str, MachineLive] = {m.id: MachineLive() for m in machines}
        self.build_file_paths: dict[str, str] = {}
        self.on_build_file_path = None  # callback(machine_id, path) when a machine reports a new build file

    def observe(self, ingests: Sequence[Ingest]) -> None:
        """Keep the newest value of each role signal (cheap: a dict lookup per reading)."""
        for ing in ingests:
            roles = self.roles.get(ing.machine_id)
            if not roles:
                continue
            live = self.machines[ing.machine_id]
            for r in ing.readings:
                role = roles.get(r.signal)
                if role is None or r.value is None or r.quality == "bad":
                    continue
                if role == "layer":
                    live.layer = int(r.value)
                elif role == "layers_total":
                    live.layers_total = int(r.value)
                elif role == "machine_state":
                    live.machine_state = str(r.value)
                elif role == "build_file_path":
                    path = str(r.value)
                    if path and self.build_file_paths.get(ing.machine_id) != path:
                        self.build_file_paths[ing.machine_id] = path
                        if self.on_build_file_path is not None:
                            self.on_build_file_path(ing.machine_id, path)
                live.updated_ns = ing.received_ns

    def alert(self, event: Event) -> None:
        """Keep the last few warnings and alarms of a machine, and its standing conditions until they clear."""
        live = self.machines.get(event.machine_id)
        if live is None:
            return
        for raised, cleared_by in STANDING.items():
            if event.kind == cleared_by:
                live.standing.pop(raised, None)
        if event.severity not in ("warning", "alarm"):
            return
        alert = {"severity": event.severity, "kind": event.kind, "message": event.message, "ts_ns": event.ts_ns}
        if event.kind in STANDING:
            live.standing[event.kind] = alert
        live.alerts = (live.alerts + [alert])[-5:]

    def alerts_of(self, machine_id: str) -> list[dict]:
        """What the dashboard shows: the standing conditions first, then the latest alerts."""
        live = self.machines[machine_id]
        standing = list(live.standing.values())
        return standing + [a for a in live.alerts if a not in standing]
