"""What connectors produce and where they put it: readings, ingests and the sink interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

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
    """Where connectors hand over what they receive. submit() returns only once it is durable."""

    def submit(self, ingests: Sequence[Ingest]) -> None:
        """Store all ingests durably in one transaction; raise OutboxFull under back-pressure."""

    def quarantine(self, *, source: str, origin: str, raw: bytes, reason: str, machine_id: str | None = None) -> None:
        """Keep a malformed input (raw bytes) with its origin and reason; count it."""

    def event(self, event: Event) -> None:
        """Record an event durably (written to InfluxDB as an event point, and logged)."""
