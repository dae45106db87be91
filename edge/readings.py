"""What connectors produce and where they put it: readings, ingests and the sink interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence

Value = float | int | bool | str


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one signal of one machine, as the connector received it."""

    signal: str  # signal name from the machine config (SignalConfig.name)
    value: Value | None  # None only when quality is "bad" (no usable value)
    source_ts_ns: int | None = None  # machine/server time of the value, Unix ns; None = not given
    quality: str = "good"  # "good" | "uncertain" | "bad"
    status: str | None = None  # protocol status text when not good, e.g. OPC UA "BadSensorFailure"


@dataclass(frozen=True, slots=True)
class Ingest:
    """Readings of one machine received together (one MQTT message, one OPC UA notification)."""

    machine_id: str
    readings: Sequence[Reading]
    received_ns: int  # agent receive time, taken once; used for readings without source time
    origin: str = ""  # where it came from (e.g. MQTT topic), for logs and quarantine
    extra_events: Sequence["Event"] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at a machine or connection: excursion, connection lost/restored, gap, identity."""

    machine_id: str
    kind: str  # "excursion" | "connection_lost" | "connection_restored" | "gap" | "identity" | "build_file_check" | ...
    message: str
    ts_ns: int
    severity: str = "info"  # "info" | "warning" | "alarm"
    fields: dict[str, Value] = field(default_factory=dict)


class OutboxFull(RuntimeError):
    """The outbox reached its disk budget: the caller must not acknowledge upstream (back-pressure)."""


class ReadingSink(Protocol):
    """Where connectors hand over what they receive. submit() returns only once it is durable.

    Besides data, the sink keeps the agent's own record across restarts (issue 18): lasting conditions (a link
    down, back-pressure) with their true start, and small connector state (the last seq per topic) stored in the
    same transaction as the data it describes."""

    def submit(self, ingests: Sequence[Ingest], *, state: Mapping[str, str | None] | None = None) -> None:
        """Store all ingests (and state, None deleting a key) durably in one transaction; OutboxFull under
        back-pressure."""

    def saved_state(self, prefix: str) -> dict[str, str]:
        """Connector state stored by submit(state=...), by key, for keys starting with prefix."""

    def save_state(self, state: Mapping[str, str | None]) -> None:
        """Store connector state alone, durably (None deletes a key); never refused for the outbox budget."""

    def open_condition(self, key: str, event: Event) -> bool:
        """Store a lasting condition's start with its event; False when it is open already (nothing stored)."""

    def close_condition(self, key: str, make_event: Callable[[int], Event]) -> int | None:
        """End an open condition with the event make_event(since_ns) makes; its start, or None if not open."""

    def quarantine(self, *, source: str, origin: str, raw: bytes, reason: str, machine_id: str | None = None) -> None:
        """Keep a malformed input (raw bytes) with its origin and reason; count it."""

    def event(self, event: Event) -> None:
        """Record an event durably (written to InfluxDB as an event point, and logged)."""


class MemoryJournal:
    """Conditions and connector state in memory, for sinks that keep no durable agent state (test sinks): the
    same contract as the pipeline's, without surviving a restart. Subclasses provide event()."""

    def __init__(self) -> None:
        self._conditions: dict[str, int] = {}
        self._state: dict[str, str] = {}

    def event(self, event: Event) -> None:  # pragma: no cover - provided by the sink
        raise NotImplementedError

    def keep_state(self, state: Mapping[str, str | None] | None) -> None:
        """Apply submit()'s state."""
        for k, v in (state or {}).items():
            if v is None:
                self._state.pop(k, None)
            else:
                self._state[k] = v

    def conditions(self) -> dict[str, int]:
        """Open conditions and since when (ns)."""
        return dict(self._conditions)

    def save_state(self, state: Mapping[str, str | None]) -> None:
        """Store state alone."""
        self.keep_state(state)

    def saved_state(self, prefix: str) -> dict[str, str]:
        """State by key for keys starting with prefix."""
        return {k: v for k, v in self._state.items() if k.startswith(prefix)}

    def open_condition(self, key: str, event: Event) -> bool:
        """Open a condition with its event; False when open already."""
        if key in self._conditions:
            return False
        self._conditions[key] = event.ts_ns
        self.event(event)
        return True

    def close_condition(self, key: str, make_event: Callable[[int], Event]) -> int | None:
        """Close a condition with the event make_event(since) gives."""
        since = self._conditions.pop(key, None)
        if since is not None:
            self.event(make_event(since))
        return since
