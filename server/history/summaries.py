"""Build summaries stored at release: each released device's process-monitoring summary (signals, events, plots,
and its cycles' plots) computed once from InfluxDB with the same InfluxQL as a live summary, stored in
`build_summaries` with its SHA-256 in an HMAC-chained audit entry, and read by the DHR instead of raw points.

Why at release: the edge outbox may still deliver late points of a build until then; the release seal reads the
device's whole time series at that moment, so a summary computed in the same step covers exactly the sealed
data. Before release (or when the seal was deferred, or for devices released before summaries were stored) the
DHR computes the summary live and says so (`source = "live"`)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, settings_of
from server.errors import Conflict
from server.history import service
from server.timeseries.gaps import data_gaps
from server.history.cycle_plots import cycle_plot
from server.timeseries.influx import InfluxQL
from server.history.schemas import SOURCE_LIVE, SOURCE_STORED, BuildSummary, DataGap, PlotSeries, StoredSummary
from server.models import AuditEntry, BuildSummaryRecord, Device, StageStep, utcnow
from server.security import Principal, canonical_json

AUDIT_ACTION = "build_summary_stored"


def compute(session: Session, influx: InfluxQL, *, device: Device) -> StoredSummary:
    """The summary a DHR shows, computed now from InfluxDB: build signals, events, plots, and every cycle's plot."""
    from server.cycles.service import cycles_of_device

    build = service.build_summary(session, influx, device_code=device.device_code, plots=True)
    ended = [c for c in cycles_of_device(session, device_id=device.id) if c.ended_at]
    cycles = {c.id: cycle_plot(session, influx, cycle=c, device_code=device.device_code) for c in ended}
    gaps = {c.id: data_gaps(influx, machine_id=c.machine_id, start=c.started_at, end=c.ended_at)
            for c in ended}
    return StoredSummary(build=build, cycle_plots=cycles, cycle_gaps=gaps)


def _text(summary: StoredSummary) -> str:
    # Provenance fields are set when read, not stored: the stored text is the computed data only.
    return canonical_json(summary.model_dump(mode="json", exclude={"build": {"source", "computed_at",
                                                                              "summary_sha256", "note"}}))


def save(session: Session, *, actor: Principal, device: Device, summary: StoredSummary) -> BuildSummaryRecord:
    """Store a device's computed summary once, with an audit entry holding its SHA-256 (never updated later)."""
    if session.scalar(select(BuildSummaryRecord.id).where(BuildSummaryRecord.device_id == device.id)) is not None:
        raise Conflict(f"Device {device.device_code} already has a stored build summary", code="summary_stored")
    text = _text(summary)
    sha = hashlib.sha256(text.encode()).hexdigest()
    now = utcnow()
    b = summary.build
    entry = record(session, actor=actor, action=AUDIT_ACTION, record_type="device", record_id=device.device_code,
                   new={"summary_sha256": sha, "computed_at": now.isoformat(), "range_start": b.start.isoformat(),
                        "range_end": b.end.isoformat(), "signals": len(b.signals), "events": len(b.events),
                        "plots": len(b.plots), "cycle_plots": sorted(summary.cycle_plots)})
    row = BuildSummaryRecord(device_id=device.id, computed_at=now, range_start=b.start, range_end=b.end,
                             summary=text, summary_sha256=sha, audit_seq=entry.seq)
    session.add(row)
    session.flush()
    return row


def stored_row(session: Session, *, device: Device) -> BuildSummaryRecord | None:
    """The device's stored summary row, if any."""
    return session.scalar(select(BuildSummaryRecord).where(BuildSummaryRecord.device_id == device.id))


def check(session: Session, *, device: Device, row: BuildSummaryRecord) -> list[str]:
    """What is wrong with a stored summary: its text against its hash, and that hash against the audit entry."""
    from server.audit.service import entry_fields
    from server.security import seal as hmac_seal

    problems = []
    actual = hashlib.sha256(row.summary.encode()).hexdigest()
    if actual != row.summary_sha256:
        problems.append("stored build summary changed: its text no longer matches its SHA-256 "
                        f"(recorded {row.summary_sha256[:16]}…, now {actual[:16]}…)")
    entry = session.get(AuditEntry, row.audit_seq)
    if entry is None or entry.action != AUDIT_ACTION or entry.record_id != device.device_code or \
            not hmac.compare_digest(hmac_seal(settings_of(session).audit_key, entry_fields(entry)), entry.entry_hash):
        problems.append(f"the audit entry {row.audit_seq} holding the stored build summary's SHA-256 is missing "
                        f"or was altered")
    elif json.loads(entry.new_values).get("summary_sha256") != actual:
        problems.append(f"stored build summary changed: its SHA-256 differs from the one in audit entry {entry.seq}")
    return problems


def _released(session: Session, device: Device) -> bool:
    return session.scalar(select(StageStep.id).where(StageStep.device_id == device.id, StageStep.stage == "release",
                                                     StageStep.state == "accepted")) is not None


@dataclass
class Monitoring:
    """The build summary a DHR shows and the cycle plots that came with it (None: read them live)."""

    build: BuildSummary
    cycle_plots: dict[int, list[PlotSeries]] | None = None
    problems: list[str] = field(default_factory=list)
    cycle_gaps: dict[int, list[DataGap]] | None = None


def summary_of(session: Session, influx: InfluxQL, *, device_code: str, plots: bool = False) -> Monitoring:
    """The stored summary of a released device (no InfluxDB read), else one computed live and marked so."""
    device = service.device_by_code(session, device_code)
    row = stored_row(session, device=device)
    problems = check(session, device=device, row=row) if row is not None else []
    if row is not None and not problems:
        data = StoredSummary.model_validate_json(row.summary)
        build = data.build.model_copy(update={"source": SOURCE_STORED, "computed_at": row.computed_at,
                                              "summary_sha256": row.summary_sha256,
                                              "plots": data.build.plots if plots else []})
        return Monitoring(build, data.cycle_plots if plots else {}, cycle_gaps=data.cycle_gaps)
    build = service.build_summary(session, influx, device_code=device_code, plots=plots)
    note = None
    if row is None and _released(session, device):
        note = ("no stored summary for this released device (its seal was deferred, or it was released before "
                "summaries were stored: amtrace-server dhr seal or dhr summarize stores it)")
    if problems:
        # Never show a summary that fails its check; the live one is from the sealed data (see dhr verify).
        note = "the stored summary failed its check (" + "; ".join(problems) + "); computed live from InfluxDB"
    return Monitoring(build.model_copy(update={"source": SOURCE_LIVE, "note": note}), None, problems)
