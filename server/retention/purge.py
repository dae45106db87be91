"""How long any record is kept, and the purge of a job's records after retention (issue 19).

**Linked records carry the date of the devices they serve**: a job, a cycle, a nonconformity, a design iteration or
a material lot is kept until the latest `retain_until` of its devices; a signature as long as the record it signs;
while any device it serves is not released (no date yet) it is kept, full stop. Records that serve every device of
the plant (recipes, qualification evidence, users, machines) are not purgeable here.

**The purge unit is a job**: its devices and everything that hangs off them (stage steps, manual steps, cycle loads,
nonconformities, seals, stored summaries, archives, retention rows, samples and their custody, shipment lines, gate
decisions, build-file checks, operator presence) and the signatures on those records. It needs an administrator's
electronic signature and every device past its date; the rows are deleted through the unit of work, so the same
transaction's `rows_sealed` entry records each as deleted, and a `records_purged` entry — the tombstone, bound to
the signature — lists what went. The audit chain itself is never purged: it is the proof that the records existed
and were purged by whom (its entries hold device codes, never patient identity). `audit verify` passes afterwards.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher
from server.auth.esign import sign
from server.errors import Conflict, Forbidden, NotFound
from server.models import (AuditEntry, BuildFileCheck, BuildSummaryRecord, CycleLoadItem, Device, DeviceArchive,
                           DeviceRetention, DeviceSeal, GateDecision, ImpactAssessment, Job, ManualStep,
                           Nonconformity, OperatorPresence, ProcessCycle, RetainedSample, SampleCustody, ShipmentItem,
                           Signature, StageStep, utcnow)
from server.security import Principal, content_sha256

PURGEABLE = ("job", "device", "cycle", "nonconformity", "signature")
KNOWN = PURGEABLE + ("design_iteration", "material_lot")
# The record types signatures name, for the rows a purge deletes (the rest are not purged with a job).
_SIGNED = {StageStep: ("stage_acceptance", "stage_completion"), ManualStep: ("manual_step",),
           Nonconformity: ("nonconformity",), ImpactAssessment: ("impact_assessment",),
           SampleCustody: ("sample_custody",), ProcessCycle: ("process_cycle",)}


@dataclass
class Kept:
    """How long a record is kept, and why."""

    record: str
    until: date | None  # None: kept without end for now (a device it serves is not released)
    because: str
    devices: list[str] = field(default_factory=list)
    job_id: int | None = None

    def under_retention(self, today: date) -> bool:
        """True while the record may not be purged."""
        return self.until is None or self.until >= today


def _over_devices(session: Session, what: str, devices: list[Device], job_id: int | None) -> Kept:
    if not devices:
        return Kept(what, None, "it serves no device (kept with the plant's records)", [], job_id)
    dates = {d.device_code: session.scalar(select(DeviceRetention.retain_until)
                                           .where(DeviceRetention.device_id == d.id)) for d in devices}
    codes = sorted(dates)
    open_ = [c for c in codes if dates[c] is None]
    if open_:
        return Kept(what, None, f"device {open_[0]} is not released (no retention date yet)", codes, job_id)
    latest = max(dates, key=lambda c: dates[c])
    return Kept(what, dates[latest], f"retention of device {latest}", codes, job_id)


def kept(session: Session, record_type: str, record_id: str) -> Kept:
    """How long a job, device, cycle, nonconformity or signature is kept (NotFound when it does not exist)."""
    what = f"{record_type} {record_id}"
    if record_type == "device":
        device = session.scalar(select(Device).where(Device.device_code == record_id))
        if device is None:
            raise NotFound(f"No device {record_id}", code="device_not_found")
        return _over_devices(session, what, [device], device.job_id)
    if not record_id.isdigit():
        raise NotFound(f"No {what}", code="record_not_found")
    key = int(record_id)
    if record_type == "job":
        if session.get(Job, key) is None:
            raise NotFound(f"No job {key}", code="job_not_found")
        return _over_devices(session, what, list(session.scalars(select(Device).where(Device.job_id == key))), key)
    if record_type == "cycle":
        if session.get(ProcessCycle, key) is None:
            raise NotFound(f"No cycle {key}", code="cycle_not_found")
        devices = list(session.scalars(select(Device).join(CycleLoadItem, CycleLoadItem.device_id == Device.id)
                                       .where(CycleLoadItem.cycle_id == key)))
        return _over_devices(session, what, devices, None)
    if record_type == "nonconformity":
        nc = session.get(Nonconformity, key)
        if nc is None:
            raise NotFound(f"No nonconformity {key}", code="nonconformity_not_found")
        if nc.device_id is not None:
            device = session.get(Device, nc.device_id)
            return _over_devices(session, what, [device], device.job_id)
        elif nc.job_id is not None:
            devices = list(session.scalars(select(Device).where(Device.job_id == nc.job_id)))
        else:
            return Kept(what, None, "it concerns a machine, lot or design iteration (kept with the plant's records)")
        return _over_devices(session, what, devices, nc.job_id)
    if record_type in ("design_iteration", "material_lot"):
        # Shared by many jobs: kept while any device built from it is kept; never purged with one job.
        column = Device.design_iteration_id if record_type == "design_iteration" else Job.material_lot_id
        devices = list(session.scalars(select(Device).join(Job, Job.id == Device.job_id).where(column == key)))
        return _over_devices(session, what, devices, None)
    if record_type == "signature":
        sig = session.get(Signature, key)
        if sig is None:
            raise NotFound(f"No signature {key}", code="signature_not_found")
        target = _signed_record(session, sig)
        if target is None:
            return Kept(what, None, f"it signs a {sig.record_type.replace('_', ' ')} (kept with the plant's records)")
        inner = kept(session, *target)
        return Kept(what, inner.until, f"it signs {inner.record}: {inner.because}", inner.devices, inner.job_id)
    raise NotFound(f"No retention for records of type {record_type}; known: {', '.join(KNOWN)}",
                   code="record_type_unknown")


def _signed_record(session: Session, sig: Signature) -> tuple[str, str] | None:
    """The purgeable record a signature signs (type, id), or None when it signs a plant-wide record."""
    rid = int(sig.record_id) if sig.record_id.isdigit() else None
    if rid is None:
        return None
    if sig.record_type in ("stage_acceptance", "stage_completion", "impact_assessment", "manual_step"):
        model = {"impact_assessment": ImpactAssessment, "manual_step": ManualStep}.get(sig.record_type, StageStep)
        row = session.get(model, rid)
        if row is None:
            return None
        step = session.get(StageStep, row.step_id) if model is ImpactAssessment else row
        return "device", session.get(Device, step.device_id).device_code
    if sig.record_type in ("design_iteration", "material_lot"):
        return sig.record_type, str(rid)
    if sig.record_type == "nonconformity":
        return "nonconformity", str(rid)
    if sig.record_type == "process_cycle":
        return "cycle", str(rid)
    if sig.record_type == "sample_custody":
        custody = session.get(SampleCustody, rid)
        sample = custody and session.get(RetainedSample, custody.sample_id)
        return ("device", session.get(Device, sample.device_id).device_code) if sample else None
    return None


def refuse_under_retention(session: Session, record_type: str, record_id: str, today: date | None = None) -> Kept:
    """Raise Conflict naming the record and its date while it is kept; else return how long it was kept."""
    k = kept(session, record_type, record_id)
    today = today or utcnow().date()
    if k.under_retention(today):
        until = "until further notice" if k.until is None else f"until {k.until.isoformat()}"
        raise Conflict(f"{k.record} is under retention {until} ({k.because}): it may not be deleted or purged",
                       code="under_retention")
    return k


def _purge_content(job_id: int, devices: list[dict], reason: str) -> dict[str, Any]:
    return {"job_id": job_id, "devices": devices, "reason": reason}


@register_record_hasher("records_purge")
def _rehash_purge(session: Session, record_id: str) -> str | None:
    """A purge's signature binds to its tombstone's content (the records themselves are gone)."""
    entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "records_purged",
                                                    AuditEntry.record_id == record_id).order_by(AuditEntry.seq))
    if entry is None:
        return None
    new = json.loads(entry.new_values)
    return content_sha256(_purge_content(new["job_id"], new["devices"], new["reason"]))


def purge(session: Session, *, actor: Principal, record_type: str, record_id: str, password: str, reason: str,
          today: date | None = None) -> dict[str, Any]:
    """Purge the job holding the record, after retention, with the administrator's signature; returns the tombstone."""
    if actor.role != "admin":
        raise Forbidden("Only an administrator may purge records after retention", code="role_not_allowed")
    if not reason.strip():
        raise Conflict("A purge needs a reason", code="reason_required")
    k = refuse_under_retention(session, record_type, record_id, today)
    if k.job_id is None:
        jobs = sorted({d.job_id for d in session.scalars(select(Device).where(Device.device_code.in_(k.devices)))})
        raise Conflict(f"{k.record} is purged with the job(s) of its devices: purge job "
                       f"{', '.join(map(str, jobs)) or '(none)'}", code="purge_by_job")
    job_id = k.job_id
    whole = refuse_under_retention(session, "job", str(job_id), today)  # every device of the job, not just this one
    devices = list(session.scalars(select(Device).where(Device.job_id == job_id).order_by(Device.id)))
    ids = [d.id for d in devices]
    samples = list(session.scalars(select(RetainedSample).where(RetainedSample.device_id.in_(ids))))
    for s in samples:
        if s.state != "disposed" and s.retain_until >= (today or utcnow().date()):
            raise Conflict(f"retained sample {s.id} of job {job_id} is kept until {s.retain_until.isoformat()}: "
                           "dispose of it (signed) or wait", code="under_retention")
    listed = [{"device_code": d.device_code, "retain_until": session.scalar(
        select(DeviceRetention.retain_until).where(DeviceRetention.device_id == d.id)).isoformat()} for d in devices]
    content = _purge_content(job_id, listed, reason)
    # Named by the job and its first device code: SQLite may give a purged job's number to a later job, a device
    # code is never given twice, so the signature's record (the tombstone) is never ambiguous.
    purge_id = f"job-{job_id}:{devices[0].device_code}"
    sig = sign(session, signer=actor, password=password, meaning="approved", record_type="records_purge",
               record_id=purge_id, record_sha256=content_sha256(content), allowed_roles=("admin",))
    steps = list(session.scalars(select(StageStep).where(StageStep.device_id.in_(ids))))
    ncs = list(session.scalars(select(Nonconformity).where(or_(Nonconformity.device_id.in_(ids),
                                                               Nonconformity.job_id == job_id))))
    loads = list(session.scalars(select(CycleLoadItem).where(CycleLoadItem.device_id.in_(ids))))
    cycle_ids = {c.cycle_id for c in loads}
    groups: list[list[Any]] = [
        list(session.scalars(select(ImpactAssessment).where(ImpactAssessment.step_id.in_([s.id for s in steps])))),
        list(session.scalars(select(SampleCustody).where(SampleCustody.sample_id.in_([s.id for s in samples])))),
        samples,
        list(session.scalars(select(ShipmentItem).where(ShipmentItem.device_id.in_(ids)))),
        loads,
        list(session.scalars(select(ManualStep).where(ManualStep.device_id.in_(ids)))),
        list(session.scalars(select(BuildFileCheck).where(BuildFileCheck.job_id == job_id))),
    ]
    groups.append(ncs)
    for model in (BuildSummaryRecord, DeviceSeal, DeviceRetention, DeviceArchive):
        groups.append(list(session.scalars(select(model).where(model.device_id.in_(ids)))))
    archives = [(session.get(Device, a.device_id).device_code, a.archive_id) for a in groups[-1]]
    groups += [steps, list(session.scalars(select(OperatorPresence).where(OperatorPresence.job_id == job_id))),
               list(session.scalars(select(GateDecision).where(GateDecision.job_id == job_id)))]
    rows: dict[str, int] = {}
    signed: set[tuple[str, str]] = set()
    for group in groups:
        for row in group:
            for rtype in _SIGNED.get(type(row), ()):
                signed.add((rtype, str(row.id)))
            session.delete(row)
            rows[row.__tablename__] = rows.get(row.__tablename__, 0) + 1
        session.flush()  # in dependency order: children before the rows they point at
    # Cycles whose whole load was this job's devices go too (a shared cycle keeps its other devices).
    for cid in sorted(cycle_ids):
        if session.scalar(select(CycleLoadItem.device_id).where(CycleLoadItem.cycle_id == cid).limit(1)) is None:
            signed.add(("process_cycle", str(cid)))
            session.delete(session.get(ProcessCycle, cid))
            rows["process_cycles"] = rows.get("process_cycles", 0) + 1
    session.flush()
    for device in devices:
        session.delete(device)
    session.flush()
    session.delete(session.get(Job, job_id))
    session.flush()
    rows["devices"], rows["jobs"] = len(devices), 1
    doomed = [s for s in session.scalars(select(Signature).where(Signature.record_type.in_(
        {t for t, _ in signed}))) if (s.record_type, s.record_id) in signed]
    for s in doomed:
        session.delete(s)
    session.flush()
    rows["signatures"] = len(doomed)
    tombstone = {**content, "rows": dict(sorted(rows.items())), "signature_id": sig.id,
                 "signatures_purged": sorted(s.id for s in doomed),
                 "retention": {"until": whole.until.isoformat(), "because": whole.because},
                 "archives": [f"{c}/{a}" for c, a in archives]}
    record(session, actor=actor, action="records_purged", record_type="records_purge", record_id=purge_id,
           new=tombstone, reason=reason)
    return tombstone


def remove_archives(settings, tombstone: dict[str, Any]) -> None:
    """After the purge committed: its archives leave a directory store (object storage expires its own locks)."""
    from server.archive.store import DirectoryStore, store_of

    store = store_of(settings)
    if not isinstance(store, DirectoryStore):
        return
    for key in tombstone["archives"]:
        folder = store.path(key)
        if folder.is_dir():
            for p in folder.rglob("*"):
                p.chmod(0o700 if p.is_dir() else 0o600)
            shutil.rmtree(folder)
