"""The pipeline: map readings through the signal map, tag them with machine, job and device codes,
check live limits, and store them as InfluxDB line protocol in the durable outbox.

It is the ReadingSink every connector hands its Ingests to; `submit` returns only once the
lines are on disk, which is what lets a connector acknowledge upstream."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

from edge.assignments import AssignmentBook
from edge.config import MachineConfig, SignalConfig
from edge.lineprotocol import check_timestamp, render_fields, render_line, series_key
from edge.outbox import Outbox
from edge.readings import Event, Ingest, OutboxFull, Reading, Value
from edge.values import coerce

log = logging.getLogger("amtrace.pipeline")

EVENTS_MEASUREMENT = "amtrace_events"
# Agent state in the outbox's meta table: open conditions ("condition:<key>" -> start ns).
CONDITION_PREFIX = "condition:"
OUTBOX_FULL = "outbox_full"
SIGNAL_MAP_MEASUREMENT = "amtrace_signal_map"


@dataclass
class PipelineStats:
    """Counters shown by status and metrics."""

    ingests: int = 0
    readings_in: int = 0
    field_values: int = 0  # values written (a reading fans out to one value per device)
    lines: int = 0
    unknown_signal: int = 0
    rejected_values: int = 0
    excursions: int = 0
    events: int = 0
    quarantined: int = 0
    backpressure_refusals: int = 0
    last_error: str | None = None
    per_machine_readings: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Pipeline:
    """ReadingSink that turns Ingests into tagged line protocol in the outbox."""

    def __init__(self, machines: Iterable[MachineConfig], outbox: Outbox, assignments: AssignmentBook):
        self.machines = {m.id: m for m in machines}
        self._signals = {m.id: {s.name: s for s in m.signals} for m in self.machines.values()}
        # Signals whose good finite float values need no check beyond finiteness (float type, no
        # limits): name -> (measurement, field). Everything else takes _add_fields.
        self._plain_float = {
            m.id: {s.name: (s.measurement, s.field) for s in m.signals if s.type == "float" and s.limits is None}
            for m in self.machines.values()
        }
        # (measurement, machine, assignment) -> escaped line heads, one per device: the tag set of a
        # machine changes only with its job, so the sorting and escaping is done once per job.
        self._heads: dict[tuple, list[str]] = {}
        self.outbox = outbox
        self.assignments = assignments
        self.stats = PipelineStats()
        self._lock = threading.Lock()
        # (machine, signal) -> severity currently in force ("warning"/"alarm"); transitions make events
        self._excursion_state: dict[tuple[str, str], str] = {}
        self._state_updates: dict[tuple[str, str], str | None] = {}
        # An open outbox-full episode survives a restart (issue 18): its start is agent state in the outbox, so
        # a restarted agent neither re-raises the alarm with its own start time nor loses the episode's end.
        self._refusing = self.conditions().get(OUTBOX_FULL) is not None

    # -- ReadingSink -----------------------------------------------------------------------
    def submit(self, ingests: Sequence[Ingest], *, state: Mapping[str, str | None] | None = None) -> list[Event]:
        """Render and store all ingests in one durable transaction; OutboxFull under back-pressure.

        state: the connector's agent state that describes these ingests (e.g. the last seq per topic), stored in
        the same transaction, so after a crash state and data agree. Returns the limit excursions they raised
        (start and end), for the live alerts and the server."""
        blocks: list[tuple[str, int]] = []
        values = 0
        readings = 0
        with self._lock:
            excursion_events: list[Event] = []
            # Limit-state changes are applied only once the put succeeded, so a refused
            # (back-pressured) ingest that comes again raises its excursion event again.
            self._state_updates = {}
            for ing in ingests:
                lines, n_values = self._render_ingest(ing, excursion_events)
                readings += len(ing.readings)
                values += n_values
                for ev in ing.extra_events:
                    lines.extend(self._render_event(ev))
                if lines:
                    blocks.append(("\n".join(lines), len(lines)))
            for ev in excursion_events:
                ev_lines = self._render_event(ev)
                blocks.append(("\n".join(ev_lines), len(ev_lines)))
            meta = dict(state or {})
            released = []
            if self._refusing:
                since = self.conditions().get(OUTBOX_FULL)
                released = [self._outbox_alarm(full=False, since_ns=since)]
                meta[CONDITION_PREFIX + OUTBOX_FULL] = None
            try:
                self.outbox.put(released + blocks, meta=meta)
            except OutboxFull:
                self.stats.backpressure_refusals += 1
                self._refused()
                raise
            self._refusing = False
            for key, severity in self._state_updates.items():
                if severity is None:
                    self._excursion_state.pop(key, None)
                else:
                    self._excursion_state[key] = severity
            self.stats.ingests += len(ingests)
            self.stats.readings_in += readings
            self.stats.field_values += values
            self.stats.lines += sum(n for _, n in blocks)
            self.stats.excursions += len(excursion_events)
            for ing in ingests:
                self.stats.per_machine_readings[ing.machine_id] += len(ing.readings)
        for ev in excursion_events:
            self._log_event(ev)
        return excursion_events

    def quarantine(self, *, source: str, origin: str, raw: bytes, reason: str, machine_id: str | None = None) -> None:
        """Keep a malformed input with its reason (durable), count it, log it."""
        self.outbox.add_quarantine(source=source, origin=origin, raw=raw, reason=reason, machine_id=machine_id)
        with self._lock:
            self.stats.quarantined += 1
        log.warning("quarantined %s input from %s: %s", source, origin, reason,
                    extra={"machine": machine_id, "reason": reason, "origin": origin})

    def event(self, event: Event) -> None:
        """Store an event point durably at once and log it. Events are the agent's evidence (link lost, outbox
        full, gap, session lost, identity, interlock): they are stored even when the outbox is at its budget
        (few and small), never held in memory where a crash would erase them."""
        self._log_event(event)
        lines = self._render_event(event)
        with self._lock:
            self.stats.events += 1
            self.outbox.put([("\n".join(lines), len(lines))], over_budget=True)

    def saved_state(self, prefix: str) -> dict[str, str]:
        """Connector state stored with submit(state=...), for keys starting with prefix."""
        return self.outbox.meta_items(prefix)

    def save_state(self, state: Mapping[str, str | None]) -> None:
        """Store connector state alone, durably; it is tiny and never refused for the budget."""
        with self._lock:
            self.outbox.put([], meta=state, over_budget=True)

    # -- conditions: problems that last, whose start must survive a restart --------------------
    def conditions(self) -> dict[str, int]:
        """Open conditions (outbox full, a link down, back-pressure on a machine) and since when (ns), as stored."""
        return {k[len(CONDITION_PREFIX):]: int(v) for k, v in self.outbox.meta_items(CONDITION_PREFIX).items()}

    def open_condition(self, key: str, event: Event) -> bool:
        """Record the start of a lasting condition with its event, in one durable transaction; False (and
        nothing stored) when it is already open, e.g. raised by the agent before a restart."""
        with self._lock:
            if self.outbox.get_meta(CONDITION_PREFIX + key) is not None:
                return False
            lines = self._render_event(event)
            self.stats.events += 1
            self.outbox.put([("\n".join(lines), len(lines))], meta={CONDITION_PREFIX + key: str(event.ts_ns)},
                            over_budget=True)
        self._log_event(event)
        return True

    def close_condition(self, key: str, make_event) -> int | None:
        """End a lasting condition: make_event(since_ns) gives its closing event (with the true start, even when
        it began before a restart); stored with the condition's removal. None when it was not open."""
        with self._lock:
            since = self.outbox.get_meta(CONDITION_PREFIX + key)
            if since is None:
                return None
            event = make_event(int(since))
            lines = self._render_event(event)
            self.stats.events += 1
            self.outbox.put([("\n".join(lines), len(lines))], meta={CONDITION_PREFIX + key: None}, over_budget=True)
        self._log_event(event)
        return int(since)

    def _refused(self) -> None:
        """The outbox refused a put: raise the disk-budget alarm once per episode (caller holds the lock).

        Raised here, where the refusal happens, rather than by polling the outbox: a full spell can be
        shorter than any polling period and must still leave its alarm. Its start is stored with it."""
        if not self._refusing:
            self._refusing = True
            now = time.time_ns()
            self.stats.events += 1
            self.outbox.put([self._outbox_alarm(full=True, since_ns=now)],
                            meta={CONDITION_PREFIX + OUTBOX_FULL: str(now)}, over_budget=True)
            log.error("outbox reached its disk budget: upstream acknowledgements stop, data stays at the source")

    def _outbox_alarm(self, *, full: bool, since_ns: int | None) -> tuple[str, int]:
        now = time.time_ns()
        fields: dict[str, Value] = {"budget_bytes": self.outbox.stats().budget_bytes}
        if not full and since_ns is not None:
            fields.update(since_ns=since_ns, full_s=round((now - since_ns) / 1e9, 3))
        ev = Event("", "outbox_full" if full else "outbox_released",
                   ("outbox reached its disk budget: upstream acknowledgements stopped, data held at the source"
                    if full else "outbox below its disk budget again: acknowledging upstream"
                    + (f" (full for {(now - since_ns) / 1e9:.1f} s)" if since_ns else "")),
                   since_ns if full and since_ns else now, "alarm" if full else "info", fields)
        lines = self._render_event(ev)
        return ("\n".join(lines), len(lines))

    # -- rendering ---------------------------------------------------------------------------
    def _render_ingest(self, ing: Ingest, excursions: list[Event]) -> tuple[list[str], int]:
        machine = self.machines.get(ing.machine_id)
        if machine is None:
            raise KeyError(f"machine {ing.machine_id!r} is not configured on this agent")
        signals = self._signals[machine.id]
        plain = self._plain_float[machine.id]
        received_ns = ing.received_ns
        # Group fields by (measurement, timestamp): one line carries one machine snapshot.
        groups: dict[tuple[str, int], dict[str, Value]] = {}
        last_key: tuple[str, int] | None = None
        fields: dict[str, Value] = {}
        for r in ing.readings:
            ts = r.source_ts_ns if r.source_ts_ns is not None else received_ns
            v = r.value
            hot = plain.get(r.signal)
            # Hot path: a good finite float (v - v is 0.0 only then) of a plain float signal.
            if hot is not None and type(v) is float and r.quality == "good" and v - v == 0.0:
                measurement, field_name = hot
                if last_key is None or last_key[0] != measurement or last_key[1] != ts:
                    last_key = (measurement, ts)
                    fields = groups.setdefault(last_key, {})
                fields[field_name] = v
                continue
            sig = signals.get(r.signal)
            if sig is None:
                self.stats.unknown_signal += 1
                log.warning("machine %s: reading for unknown signal %r dropped from %s",
                            machine.id, r.signal, ing.origin)
                continue
            last_key = (sig.measurement, ts)
            fields = groups.setdefault(last_key, {})
            self._add_fields(machine, sig, r, ts, fields, excursions)
        lines: list[str] = []
        n_values = 0
        for (measurement, ts), fields in groups.items():
            if not fields:
                continue
            ts = check_timestamp(ts)
            body = f" {render_fields(fields)} {ts}"
            heads = self._line_heads(measurement, machine.id, ts)
            for head in heads:
                lines.append(head + body)
            n_values += len(fields) * len(heads)
        return lines, n_values

    def _line_heads(self, measurement: str, machine_id: str, ts: int) -> list[str]:
        """Escaped measurement + tag set of each line a point at ts becomes (one per device)."""
        a = self.assignments.active_at(machine_id, ts)
        key = (measurement, machine_id, a)
        heads = self._heads.get(key)
        if heads is None:
            heads = [series_key(measurement, tags) for tags in self._tag_sets(machine_id, ts)]
            if len(self._heads) >= 4096:
                self._heads.clear()  # ended jobs would otherwise stay here for the agent's lifetime
            self._heads[key] = heads
        return heads

    def _add_fields(self, machine: MachineConfig, sig: SignalConfig, r: Reading, ts: int,
                    fields: dict[str, Value], excursions: list[Event]) -> None:
        if r.quality != "good":
            # A reading with a bad status is recorded as such, never as a good value.
            fields[f"{sig.field}_status"] = r.status or r.quality
            if r.quality == "bad" or r.value is None:
                return
        if r.value is None:
            return
        try:
            value = coerce(sig.type, r.value)
        except ValueError as e:
            self.stats.rejected_values += 1
            fields[f"{sig.field}_status"] = f"rejected: {e}"[:200]
            log.warning("machine %s signal %s: value refused: %s", machine.id, sig.name, e)
            return
        fields[sig.field] = value
        if sig.limits is not None and r.quality == "good":
            self._check_limits(machine, sig, float(value), ts, excursions)

    def _check_limits(self, machine: MachineConfig, sig: SignalConfig, value: float, ts: int,
                      excursions: list[Event]) -> None:
        key = (machine.id, sig.name)
        verdict = sig.limits.classify(value)
        previous = self._state_updates[key] if key in self._state_updates else self._excursion_state.get(key)
        if verdict is None:
            if previous is not None:
                self._state_updates[key] = None
                excursions.append(Event(machine.id, "excursion_end", f"{sig.name} back within limits at {value:g} {sig.unit}",
                                        ts, "info", {"signal": sig.name, "value": value, "unit": sig.unit}))
            return
        severity, side, limit = verdict
        if previous == severity:
            return
        self._state_updates[key] = severity
        word = "below" if side == "low" else "above"
        excursions.append(Event(
            machine.id, "excursion",
            f"{sig.name} {value:g} {sig.unit} is {word} the {severity} limit {limit:g} {sig.unit}",
            ts, severity, {"signal": sig.name, "value": value, "limit": limit, "side": side, "unit": sig.unit},
        ))

    def _tag_sets(self, machine_id: str, ts: int) -> list[dict[str, str]]:
        """One tag set per device on the job running at ts; machine only when no job runs."""
        a = self.assignments.active_at(machine_id, ts)
        if a is None:
            return [{"machine": machine_id}]
        return [{"machine": machine_id, "job": a.job, "device": d} for d in a.devices]

    def _render_event(self, ev: Event) -> list[str]:
        fields: dict[str, Value] = {"message": ev.message}
        tags_extra = {"kind": ev.kind, "severity": ev.severity}
        for k, v in ev.fields.items():
            if v is None:
                continue
            if k == "signal":
                tags_extra["signal"] = str(v)
            elif isinstance(v, float) and not math.isfinite(v):
                fields[k] = str(v)
            else:
                fields[k] = v
        return [render_line(EVENTS_MEASUREMENT, {**tags, **tags_extra}, fields, ev.ts_ns)
                for tags in self._tag_sets(ev.machine_id, ev.ts_ns)]

    def _log_event(self, ev: Event) -> None:
        level = {"alarm": logging.ERROR, "warning": logging.WARNING}.get(ev.severity, logging.INFO)
        log.log(level, "%s %s: %s", ev.machine_id, ev.kind, ev.message,
                extra={"machine": ev.machine_id, "event": ev.kind, "severity": ev.severity})

    def signal_map_lines(self, ts_ns: int | None = None) -> list[str]:
        """Catalogue points (machine, measurement, field → signal, unit, type, limits) for InfluxDB.

        Units live here rather than on every point: one line per signal per agent start, so a
        query can join a field to its unit without multiplying the data."""
        ts = ts_ns or time.time_ns()
        lines = []
        for m in self.machines.values():
            for s in m.signals:
                fields: dict[str, Value] = {"signal": s.name, "unit": s.unit, "type": s.type}
                if s.limits is not None:
                    for k, v in s.limits.model_dump(exclude_none=True).items():
                        fields[k] = float(v)
                lines.append(render_line(SIGNAL_MAP_MEASUREMENT,
                                         {"machine": m.id, "measurement": s.measurement, "field": s.field},
                                         fields, ts))
        return lines
