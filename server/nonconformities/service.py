"""Nonconformities raised by people or the edge; they block a device or job until dispositioned with a signature."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher, sign
from server.errors import Conflict, NotFound
from server.models import Device, Job, Machine, Nonconformity, utcnow
from server.security import Principal, content_sha256
from server.db import get_or_not_found

KINDS = ("build_file_mismatch", "limit_excursion", "failed_cycle", "dimensional", "surface", "material", "other")
DISPOSITIONS = ("use_as_is", "rework", "scrap", "return_to_supplier")


def get_nonconformity(session: Session, *, nc_id: int) -> Nonconformity:
    """The nonconformity with this id, or NotFound."""
    return get_or_not_found(session, Nonconformity, nc_id, f"No nonconformity {nc_id}", code="nonconformity_not_found")


def raise_nonconformity(session: Session, *, actor: Principal, kind: str, description: str,
                        machine_id: str | None = None, job_id: int | None = None, device_code: str | None = None,
                        details: dict[str, Any] | None = None) -> Nonconformity:
    """Record a nonconformity; it blocks its device (or every device of its job) until dispositioned."""
    if kind not in KINDS:
        raise Conflict(f"Nonconformity kind must be one of {', '.join(KINDS)}", code="nonconformity_kind")
    device_id = None
    if device_code is not None:
        device = session.scalar(select(Device).where(Device.device_code == device_code))
        if device is None:
            raise NotFound(f"No device {device_code}", code="device_not_found")
        device_id, job_id = device.id, job_id or device.job_id
    if job_id is not None:
        job = session.get(Job, job_id)
        if job is None:
            raise NotFound(f"No job {job_id}", code="job_not_found")
        machine_id = machine_id or job.machine_id
    if machine_id is not None and session.get(Machine, machine_id) is None:
        raise NotFound(f"No machine {machine_id}", code="machine_not_found")
    if machine_id is None and job_id is None and device_id is None:
        raise Conflict("A nonconformity must name a machine, a job or a device", code="nonconformity_subject")
    nc = Nonconformity(source="edge" if actor.kind == "agent" else "person", kind=kind, description=description,
                       machine_id=machine_id, job_id=job_id, device_id=device_id, details=details or {},
                       raised_by=actor.actor, state="open")
    session.add(nc)
    session.flush()
    record(session, actor=actor, action="nonconformity_raised", record_type="nonconformity", record_id=nc.id,
           new={"kind": kind, "description": description, "machine_id": machine_id, "job_id": job_id,
                "device_code": device_code, "source": nc.source, "details": nc.details})
    return nc


def blocking(session: Session, *, device: Device) -> list[Nonconformity]:
    """Open nonconformities that block this device (its own, or its job's)."""
    return list(session.scalars(select(Nonconformity).where(
        Nonconformity.state == "open",
        or_(Nonconformity.device_id == device.id,
            (Nonconformity.job_id == device.job_id) & Nonconformity.device_id.is_(None)))
        .order_by(Nonconformity.id)))


def open_for_job(session: Session, *, job_id: int) -> list[Nonconformity]:
    """Open nonconformities on a job or any of its devices."""
    return list(session.scalars(select(Nonconformity).where(Nonconformity.state == "open",
                                                            Nonconformity.job_id == job_id)
                                .order_by(Nonconformity.id)))


def disposition_content(nc: Nonconformity, disposition: str, rationale: str) -> dict[str, Any]:
    """What the disposition signature binds to."""
    return {"id": nc.id, "kind": nc.kind, "description": nc.description, "machine_id": nc.machine_id,
            "job_id": nc.job_id, "device_id": nc.device_id, "raised_by": nc.raised_by,
            "disposition": disposition, "rationale": rationale}


@register_record_hasher("nonconformity")
def _rehash(session: Session, record_id: str) -> str | None:
    nc = session.get(Nonconformity, int(record_id))
    if nc is None:
        return None
    return content_sha256(disposition_content(nc, nc.disposition, nc.disposition_rationale))


def disposition(session: Session, *, actor: Principal, nc_id: int, disposition: str, rationale: str,
                password: str) -> Nonconformity:
    """Disposition a nonconformity with the quality engineer's signature; scrap ends the device."""
    nc = get_nonconformity(session, nc_id=nc_id)
    if nc.state != "open":
        raise Conflict(f"Nonconformity {nc.id} is already dispositioned ({nc.disposition})",
                       code="nonconformity_closed")
    if disposition not in DISPOSITIONS:
        raise Conflict(f"Disposition must be one of {', '.join(DISPOSITIONS)}", code="disposition")
    sig = sign(session, signer=actor, password=password, meaning="approved", record_type="nonconformity",
               record_id=nc.id, record_sha256=content_sha256(disposition_content(nc, disposition, rationale)),
               allowed_roles=("quality_engineer",))
    nc.state, nc.disposition, nc.disposition_rationale = "dispositioned", disposition, rationale
    nc.disposition_signature_id, nc.dispositioned_at = sig.id, utcnow()
    record(session, actor=actor, action="nonconformity_dispositioned", record_type="nonconformity",
           record_id=nc.id, old={"state": "open"}, new={"state": "dispositioned", "disposition": disposition,
                                                        "signature_id": sig.id}, reason=rationale)
    if disposition == "scrap" and nc.device_id is not None:
        device = session.get(Device, nc.device_id)
        record(session, actor=actor, action="device_scrapped", record_type="device", record_id=device.device_code,
               old={"state": device.state}, new={"state": "scrapped"}, reason=f"nonconformity {nc.id}")
        device.state = "scrapped"
    return nc
