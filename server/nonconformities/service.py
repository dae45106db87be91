"""Nonconformities raised by people or the edge; they block a device or job until dispositioned with a signature."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher, register_stored_files, settings_of
from server.auth.esign import sign
from server.errors import Conflict, NotFound
from server.models import (Design, DesignIteration, Device, Job, Machine, ManualStep, MaterialLot, Nonconformity,
                           StageStep, User, utcnow)
from server.notifications.service import notify, users_with_roles
from server.security import Principal, content_sha256
from server.db import get_or_not_found
from server.images import TYPES as PHOTO_TYPES


def photo_path(session: Session, sha: str, kind: str) -> Path:
    """Where a nonconformity's photo is kept: by its SHA-256 and type, in the file store."""
    return Path(settings_of(session).file_store) / "nonconformity-photos" / f"{sha}.{PHOTO_TYPES[kind]}"


@register_stored_files
def _photo_files(session: Session):
    for nc_id, details in session.execute(select(Nonconformity.id, Nonconformity.details)):
        sha, kind = (details or {}).get("photo_sha256"), (details or {}).get("photo_type")
        if sha and kind in PHOTO_TYPES:
            yield f"photo of nonconformity {nc_id}", photo_path(session, sha, kind), sha

KINDS = ("build_file_mismatch", "limit_excursion", "failed_cycle", "dimensional", "surface", "material",
         "local_override", "other")
DISPOSITIONS = ("use_as_is", "rework", "scrap", "return_to_supplier")
# Who hears of every nonconformity (R16: "notify designers and production"); designers hear of their own designs'.
NOTIFIED_ROLES = ("production_manager", "quality_engineer")


def get_nonconformity(session: Session, *, nc_id: int) -> Nonconformity:
    """The nonconformity with this id, or NotFound."""
    return get_or_not_found(session, Nonconformity, nc_id, f"No nonconformity {nc_id}", code="nonconformity_not_found")


def raise_nonconformity(session: Session, *, actor: Principal, kind: str, description: str,
                        machine_id: str | None = None, job_id: int | None = None, device_code: str | None = None,
                        material_lot_id: int | None = None, design_iteration_id: int | None = None,
                        details: dict[str, Any] | None = None) -> Nonconformity:
    """Record a nonconformity; it blocks what it names until dispositioned (see `open_for_job`, `blocking`)."""
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
    if material_lot_id is not None and session.get(MaterialLot, material_lot_id) is None:
        raise NotFound(f"No material lot {material_lot_id}", code="lot_not_found")
    if design_iteration_id is not None and session.get(DesignIteration, design_iteration_id) is None:
        raise NotFound(f"No design iteration {design_iteration_id}", code="iteration_not_found")
    if machine_id is None and job_id is None and device_id is None and material_lot_id is None \
            and design_iteration_id is None:
        raise Conflict("A nonconformity must name a machine, a job, a device, a material lot or a design iteration",
                       code="nonconformity_subject")
    nc = Nonconformity(source="edge" if actor.kind == "agent" else "person", kind=kind, description=description,
                       machine_id=machine_id, job_id=job_id, device_id=device_id, material_lot_id=material_lot_id,
                       design_iteration_id=design_iteration_id, details=details or {}, raised_by=actor.actor,
                       state="open")
    session.add(nc)
    session.flush()
    record(session, actor=actor, action="nonconformity_raised", record_type="nonconformity", record_id=nc.id,
           new={"kind": kind, "description": description, "machine_id": machine_id, "job_id": job_id,
                "device_code": device_code, "material_lot_id": material_lot_id,
                "design_iteration_id": design_iteration_id, "source": nc.source, "details": nc.details})
    _notify_raised(session, nc, device_code)
    return nc


def designers_of(session: Session, nc: Nonconformity) -> set[int]:
    """The people who made the designs a nonconformity concerns (the design and its iterations' authors)."""
    if nc.design_iteration_id is not None:
        iterations = {nc.design_iteration_id}
    elif nc.device_id is not None:
        iterations = {session.get(Device, nc.device_id).design_iteration_id}
    elif nc.job_id is not None:
        iterations = set(session.scalars(select(Device.design_iteration_id).where(Device.job_id == nc.job_id)))
    else:
        return set()
    iterations.discard(None)
    if not iterations:
        return set()
    authors = set(session.scalars(select(DesignIteration.created_by).where(DesignIteration.id.in_(iterations))))
    authors |= set(session.scalars(select(Design.created_by).join(DesignIteration,
                                                                  DesignIteration.design_id == Design.id)
                                   .where(DesignIteration.id.in_(iterations))))
    return authors


def may_read(session: Session, *, actor: Principal, nc: Nonconformity) -> bool:
    """Production reads every nonconformity; a designer those of the designs they made."""
    return actor.role != "design_engineer" or actor.id in designers_of(session, nc)


def _notify_raised(session: Session, nc: Nonconformity, device_code: str | None) -> None:
    """R16: production (production managers, quality engineers) and the designers of what it concerns."""
    where = (f"device {device_code}" if device_code else f"job {nc.job_id}" if nc.job_id is not None
             else scope_of(nc))
    notify(session, user_ids=users_with_roles(session, NOTIFIED_ROLES) | designers_of(session, nc),
           kind="nonconformity_raised", message=f"Nonconformity {nc.id} ({nc.kind.replace('_', ' ')}) on {where}: "
                                                f"{nc.description}", record_type="nonconformity", record_id=nc.id)


# Scopes (R16: stop what the nonconformity affects). The narrowest thing a nonconformity names is its scope:
# a device; a job (every device on it); a material lot (every job built from it, every device of those jobs);
# a design iteration (every device of it); a machine, when it names nothing narrower (every job on it, and the
# devices whose build on it was not yet accepted when it was raised).
NARROWER_THAN_MACHINE = ("job_id", "device_id", "material_lot_id", "design_iteration_id")


def machine_wide():
    """SQL: a nonconformity that names a machine and nothing narrower."""
    return and_(*(getattr(Nonconformity, c).is_(None) for c in NARROWER_THAN_MACHINE))


def affecting_job(job_id, machine_id):
    """SQL: nonconformities that stop building job_id on machine_id (values or bind parameters)."""
    lot = select(Job.material_lot_id).where(Job.id == job_id).scalar_subquery()
    iterations = select(Device.design_iteration_id).where(Device.job_id == job_id)
    return or_(Nonconformity.job_id == job_id, (Nonconformity.machine_id == machine_id) & machine_wide(),
               Nonconformity.material_lot_id == lot, Nonconformity.design_iteration_id.in_(iterations))


def open_for_job(session: Session, *, job_id: int) -> list[Nonconformity]:
    """Open nonconformities that stop the job: on it or its devices, its machine, its lot, its designs."""
    job = session.get(Job, job_id)
    return list(session.scalars(select(Nonconformity).where(Nonconformity.state == "open",
                                                            affecting_job(job_id, job.machine_id))
                                .order_by(Nonconformity.id)))


def affecting_device(session: Session, *, device: Device, open_only: bool = True) -> list[Nonconformity]:
    """Nonconformities that concern this device (the open ones block its stage steps; all go in its DHR)."""
    job = session.get(Job, device.job_id)
    q = select(Nonconformity).where(or_(
        Nonconformity.device_id == device.id,
        (Nonconformity.job_id == device.job_id) & Nonconformity.device_id.is_(None),
        Nonconformity.material_lot_id == job.material_lot_id,
        Nonconformity.design_iteration_id == device.design_iteration_id,
        (Nonconformity.machine_id == job.machine_id) & machine_wide()))
    if open_only:
        q = q.where(Nonconformity.state == "open")
    built = session.scalar(select(StageStep.accepted_at).where(StageStep.device_id == device.id,
                                                               StageStep.stage == "build"))

    def concerns(nc: Nonconformity) -> bool:
        if not _machine_wide(nc):
            return True
        # A machine-wide one does not reach back to a build accepted before it was raised; a closed one
        # concerns the device only if it was raised while the device's job was on the machine.
        if built is not None and built <= nc.raised_at:
            return False
        return nc.state == "open" or nc.raised_at >= job.created_at
    return [nc for nc in session.scalars(q.order_by(Nonconformity.id)) if concerns(nc)]


def blocking(session: Session, *, device: Device) -> list[Nonconformity]:
    """Open nonconformities that block this device's stage steps."""
    return affecting_device(session, device=device)


def rework_pending(session: Session, *, device: Device) -> list[str]:
    """Why the device's reworked nonconformities are not verified yet (empty: all are).

    A device nonconformity dispositioned as rework stays in the way until the rework is recorded as a manual
    step (kind rework, signed) after the disposition, and a quality engineer has re-inspected the device
    after that rework (manual step kind inspection, signed, passing)."""
    # A failed cycle is reworked by running the cycle again: the release evidence (stages/evidence.py) already
    # requires that the latest cycle of each step on the route passed.
    ncs = session.scalars(select(Nonconformity).where(Nonconformity.device_id == device.id,
                                                      Nonconformity.state == "dispositioned",
                                                      Nonconformity.disposition == "rework",
                                                      Nonconformity.kind != "failed_cycle")
                          .order_by(Nonconformity.id))
    out = []
    for nc in ncs:
        steps = session.execute(select(ManualStep.kind, ManualStep.result, ManualStep.performed_at, User.role)
                                .join(User, User.id == ManualStep.performed_by)
                                .where(ManualStep.device_id == device.id,
                                       ManualStep.performed_at >= nc.dispositioned_at)
                                .order_by(ManualStep.performed_at, ManualStep.id)).all()
        rework = next((st for st in steps if st.kind == "rework"), None)
        head = f"nonconformity {nc.id} ({nc.kind.replace('_', ' ')}) was dispositioned as rework"
        if rework is None:
            out.append(f"{head}: no rework recorded since (manual step kind rework, signed)")
        elif not any(st.kind == "inspection" and st.result == "pass" and st.role == "quality_engineer"
                     and st.performed_at >= rework.performed_at for st in steps):
            out.append(f"{head}: no passing re-inspection by a quality engineer after the rework")
    return out


def _machine_wide(nc: Nonconformity) -> bool:
    return all(getattr(nc, c) is None for c in NARROWER_THAN_MACHINE)


def scope_of(nc: Nonconformity, *, lot_number: str | None = None) -> str:
    """What a nonconformity stops, in words: 'this job', 'machine lpbf-01', 'material lot L-7', …"""
    if nc.device_id is not None or nc.job_id is not None:
        return "this job"
    if nc.material_lot_id is not None:
        return f"material lot {lot_number or nc.material_lot_id}"
    if nc.design_iteration_id is not None:
        return f"design iteration {nc.design_iteration_id}"
    return f"machine {nc.machine_id}"


def disposition_content(nc: Nonconformity, disposition: str, rationale: str) -> dict[str, Any]:
    """What the disposition signature binds to."""
    # The two later scopes only when set: signatures made before they existed keep their content.
    scopes = {k: v for k, v in (("material_lot_id", nc.material_lot_id),
                                ("design_iteration_id", nc.design_iteration_id)) if v is not None}
    return {"id": nc.id, "kind": nc.kind, "description": nc.description, "machine_id": nc.machine_id,
            "job_id": nc.job_id, "device_id": nc.device_id, **scopes, "raised_by": nc.raised_by,
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
    if disposition == "rework" and nc.device_id is None and nc.job_id is None:
        raise Conflict(f"Nonconformity {nc.id} is on {scope_of(nc)}: rework applies to devices and jobs; a machine "
                       f"needs maintenance (and requalification), a lot or design a decision to use, return or "
                       f"replace it", code="disposition")
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


def readable(session: Session, *, actor: Principal, state: str | None = None) -> list[Nonconformity]:
    """The nonconformities this person may read (optionally in one state)."""
    q = select(Nonconformity).order_by(Nonconformity.id)
    if state:
        q = q.where(Nonconformity.state == state)
    return [nc for nc in session.scalars(q) if may_read(session, actor=actor, nc=nc)]
