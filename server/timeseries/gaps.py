"""Outages of a machine's data as its edge agent recorded them (gap events in the time series), and what was
recovered: read by the cycle verdicts (coverage), the device history record and the stored summary."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

from server.timeseries.influx import InfluxQL, ident, literal, ns, time_range

EVENTS = "amtrace_events"  # the measurement the edge agent writes its events to


class DataGap(BaseModel):
    """An outage of a machine's data as its edge agent recorded it, and what of it was recovered."""

    machine_id: str
    start: datetime
    end: datetime
    seconds: float
    recovery: str = Field(description="As the agent recorded it: full | partial | none")
    outcome: str = Field(description="What a reader concludes: recovered | partly lost | lost")
    cause: str


GAP_OUTCOME = {"full": "recovered", "partial": "partly lost", "none": "lost"}
# A gap event is stamped at the gap's end: look this far past a window for gaps that began inside it.
GAP_LOOKAHEAD_NS = 86_400 * 1_000_000_000


def data_gaps(influx: InfluxQL, *, machine_id: str, start: datetime, end: datetime) -> list[DataGap]:
    """Each outage of the machine's data overlapping [start, end], by machine and time (not by device: the
    event of an outage that began inside a job may be stamped after it), with what was recovered."""
    (series,) = influx.query(
        f"SELECT * FROM {EVENTS} WHERE {ident('machine')} = {literal(machine_id)} AND {ident('kind')} = 'gap' "
        f"AND {time_range(ns(start), ns(end) + GAP_LOOKAHEAD_NS)}")
    seen: dict[tuple, DataGap] = {}
    for s in series:
        for r in s.rows():
            gap_end = int(r.get("end_ns") or r["time"])
            gap_start = int(r.get("start_ns") or gap_end)
            if gap_start > ns(end) or gap_end < ns(start):
                continue
            recovery = str(r.get("recovery") or "none")
            key = (gap_start, gap_end, recovery, r.get("signal"))
            if key in seen:  # one event point per device of the job: the same gap
                continue
            cause = str(r.get("cause") or "")
            if r.get("signal"):
                cause = f"{r['signal']}: {cause}"
            seen[key] = DataGap(machine_id=machine_id, start=datetime_from_ns(gap_start),
                                end=datetime_from_ns(gap_end), seconds=round((gap_end - gap_start) / 1e9, 3),
                                recovery=recovery, outcome=GAP_OUTCOME.get(recovery, "lost"), cause=cause)
    return sorted(seen.values(), key=lambda g: (g.start, g.end))


def datetime_from_ns(t: int) -> datetime:
    """UTC datetime of a nanosecond timestamp (microsecond precision)."""
    return datetime.fromtimestamp(t // 1000 / 1e6, tz=timezone.utc)


def at_text(t: int) -> str:
    """A nanosecond timestamp for people, exact: ISO time and the integer."""
    return datetime_from_ns(t).isoformat(timespec="microseconds") + f" ({t} ns)"
