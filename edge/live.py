"""What the dashboard and the server link see of each machine right now, kept from the readings as they pass.

Alerts have a state. An event that belongs to a lasting cause (a limit excursion of one signal, the machine's start
interlock, a lost connection, back-pressure, an unreadable identity) opens an *active* alert under that cause's key;
the event that ends the cause (back within limits, start enabled, connection restored …) *clears* it with the time.
Events without a lasting cause (a gap, a machine restart, a refused report) are shown as *events*. Cleared alerts
and events stay visible for RECENT_NS, then drop off; active ones stay for as long as their cause lasts."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from edge.readings import Event, Ingest

# event kind -> the cause it opens or clears (excursions: one cause per signal, see _cause_key)
CAUSES = {
    "excursion": "excursion", "excursion_end": "excursion",
    "interlock": "start", "build_file_check": "start", "interlock_failed": "start",
    "connection_lost": "connection", "connection_restored": "connection",
    "backpressure": "backpressure", "backpressure_released": "backpressure", "backpressure_cleared": "backpressure",
    "identity_unknown": "identity", "identity_incomplete": "identity", "identity": "identity",
    "machine_not_owned": "ownership", "machine_owned": "ownership",
}
RECENT_NS = 30 * 60 * 1_000_000_000  # cleared alerts and events stay on the dashboard for 30 min
MAX_RECENT = 10
TREND_MINUTES = 30  # the dashboard's sparkline: one min/max/last bucket per minute
MAX_TREND_SIGNALS = 4
_SEVERITY_RANK = {"alarm": 0, "warning": 1}


def _cause_key(event: Event) -> str | None:
    cause = CAUSES.get(event.kind)
    if cause == "excursion":
        return f"excursion:{event.fields.get('signal', '')}"
    return cause


@dataclass
class Trend:
    """The last TREND_MINUTES of one key signal, one [minute_start_s, min, max, last] bucket per minute."""

    signal: str
    unit: str
    limits: dict[str, float]
    buckets: deque = field(default_factory=lambda: deque(maxlen=TREND_MINUTES))

    def add(self, ts_ns: int, value: float) -> None:
        """Fold one value into its minute's bucket."""
        minute = ts_ns // 60_000_000_000 * 60
        b = self.buckets[-1] if self.buckets else None
        if b is not None and b[0] == minute:
            b[1], b[2], b[3] = min(b[1], value), max(b[2], value), value
        elif b is None or minute > b[0]:  # a value older than the newest bucket is history, not a trend
            self.buckets.append([minute, value, value, value])

    def out(self, now_ns: int) -> dict:
        """The trend in the heartbeat's shape, buckets older than TREND_MINUTES left out."""
        oldest = now_ns // 1_000_000_000 - TREND_MINUTES * 60
        return {"signal": self.signal, "unit": self.unit, "limits": self.limits,
                "points": [list(b) for b in self.buckets if b[0] >= oldest]}


@dataclass
class MachineLive:
    """What the dashboard shows about one machine, kept from the readings as they pass."""

    layer: int | None = None
    layers_total: int | None = None
    machine_state: str | None = None
    active: dict[str, dict] = field(default_factory=dict)  # cause key -> the alert while its cause lasts
    recent: list[dict] = field(default_factory=list)  # cleared alerts and one-off events, newest last
    updated_ns: int | None = None  # last reading of a role signal
    last_data_ns: int | None = None  # last reading of any signal: "no data for N s" when old
    trends: dict[str, Trend] = field(default_factory=dict)


def _trend_signals(machine) -> list:
    """The machine's key signals: those with limits, else its first numeric ones without a role."""
    numeric = [s for s in machine.signals if getattr(s, "type", None) in ("float", "int") and not s.role]
    limited = [s for s in numeric if s.limits is not None]
    return (limited or numeric)[:MAX_TREND_SIGNALS]


class LiveState:
    """The latest values of the signals that carry a live role (layer, state …), per machine."""

    def __init__(self, machines):
        self.roles = {m.id: {s.name: s.role for s in m.signals if getattr(s, "role", None)} for m in machines}
        # Words for numeric state codes (the machine file's `states:`), per machine.
        self.state_words = {m.id: next((s.states for s in m.signals if getattr(s, "states", None)), None)
                            for m in machines}
        self.machines: dict[str, MachineLive] = {m.id: MachineLive() for m in machines}
        for m in machines:
            for s in _trend_signals(m):
                limits = {k: v for k, v in (s.limits.model_dump() if s.limits else {}).items() if v is not None}
                self.machines[m.id].trends[s.name] = Trend(s.name, s.unit, limits)
        self.build_file_paths: dict[str, str] = {}
        self.on_build_file_path = None  # callback(machine_id, path) when a machine reports a new build file

    def observe(self, ingests: Sequence[Ingest]) -> None:
        """Keep the newest value of each role signal and the trend of each key signal (a dict lookup per reading)."""
        for ing in ingests:
            live = self.machines.get(ing.machine_id)
            if live is None:
                continue
            live.last_data_ns = ing.received_ns
            roles = self.roles[ing.machine_id]
            trends = live.trends
            for r in ing.readings:
                if r.value is None or r.quality == "bad":
                    continue
                trend = trends.get(r.signal)
                if trend is not None and not isinstance(r.value, (bool, str)):
                    trend.add(r.source_ts_ns or ing.received_ns, float(r.value))
                    continue
                role = roles.get(r.signal)
                if role is None:
                    continue
                if role == "layer":
                    live.layer = int(r.value)
                elif role == "layers_total":
                    live.layers_total = int(r.value)
                elif role == "machine_state":
                    words = self.state_words[ing.machine_id]
                    live.machine_state = str(r.value) if words is None else words.get(int(r.value),
                                                                                      f"state {r.value}")
                elif role == "build_file_path":
                    path = str(r.value)
                    if path and self.build_file_paths.get(ing.machine_id) != path:
                        self.build_file_paths[ing.machine_id] = path
                        if self.on_build_file_path is not None:
                            self.on_build_file_path(ing.machine_id, path)
                live.updated_ns = ing.received_ns

    def alert(self, event: Event) -> None:
        """Open, escalate or clear the alert of the event's cause; keep a one-off warning or alarm as an event."""
        live = self.machines.get(event.machine_id)
        if live is None:
            return
        key = _cause_key(event)
        if key is not None and event.severity not in ("warning", "alarm"):
            gone = live.active.pop(key, None)
            if gone is not None:
                self._keep(live, {**gone, "state": "cleared", "cleared_ns": event.ts_ns, "cleared_by": event.message})
            return
        if event.severity not in ("warning", "alarm"):
            return
        alert = {"severity": event.severity, "kind": event.kind, "key": key, "message": event.message,
                 "ts_ns": event.ts_ns}
        if key is None:
            self._keep(live, {**alert, "state": "event"})
            return
        before = live.active.get(key)
        # An excursion that goes from warning to alarm is one cause: it keeps the time it began.
        live.active[key] = {**alert, "state": "active", "since_ns": before["since_ns"] if before else event.ts_ns}

    @staticmethod
    def _keep(live: MachineLive, alert: dict) -> None:
        live.recent = (live.recent + [alert])[-MAX_RECENT:]

    def alerts_of(self, machine_id: str, now_ns: int) -> list[dict]:
        """What the dashboard shows: active alerts (alarms first, oldest first), then the cleared ones and events of
        the last 30 minutes, newest first."""
        live = self.machines[machine_id]
        live.recent = [a for a in live.recent if now_ns - a.get("cleared_ns", a["ts_ns"]) <= RECENT_NS]
        active = sorted(live.active.values(), key=lambda a: (_SEVERITY_RANK[a["severity"]], a["since_ns"]))
        return active + sorted(live.recent, key=lambda a: a.get("cleared_ns", a["ts_ns"]), reverse=True)

    def trends_of(self, machine_id: str, now_ns: int) -> list[dict]:
        """The key signals' last 30 minutes, per minute."""
        return [t.out(now_ns) for t in self.machines[machine_id].trends.values()]
