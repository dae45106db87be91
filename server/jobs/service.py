"""Jobs (one build on one machine, one lot) and their devices with unique device codes and UDIs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from edge.validation.approvals import ApprovedBuildFile, JobApprovals
from server.audit.service import record, settings_of
from server.errors import Conflict, NotFound
from server.jobs.udi import Udi
from server.materials.service import get_lot
from server.models import Design, DesignIteration, Device, DeviceCodeCounter, Job, Machine, utcnow
from server.qualification import service as qualification
from server.security import Principal
from server.stages import service as stages
from server.db import get_or_not_found


def get_job(session: Session, *, job_id: int) -> Job:
    """The job with this id, or NotFound."""
    return get_or_not_found(session, Job, job_id, f"No job {job_id}", code="job_not_found")


def get_device(session: Session, *, device_code: str) -> Device:
    """The device with this code, or NotFound."""
    device = session.scalar(select(Device).where(Device.device_code == device_code))
    if device is None:
        raise NotFound(f"No device {device_code}", code="device_not_found")
    return device


def next_device_code(session: Session) -> str:
    """Allocate the next internal device code (configurable format, per-year counter)."""
    settings = settings_of(session)
    now = utcnow()
    counter = session.get(DeviceCodeCounter, now.year, with_for_update=True)
    if counter is None:
        counter = DeviceCodeCounter(year=now.year, last_seq=0)
        session.add(counter)
    counter.last_seq += 1
    session.flush()
    return settings.device_code_format.format(year=now.year, yy=f"{now.year % 100:02d}", seq=counter.last_seq,
                                              site=settings.site_code)


def create_job(session: Session, *, actor: Principal, machine_id: str, material_lot_id: int,
               devices: list[dict[str, Any]], coupons: list[dict[str, Any]],
               build_parameters: dict[str, Any]) -> Job:
    """Plan a job: devices from design iterations (and coupons) on one machine with one material lot."""
    machine = session.get(Machine, machine_id)
    if machine is None:
        raise NotFound(f"No machine {machine_id}", code="machine_not_found")
    lot = get_lot(session, lot_id=material_lot_id)
    if not devices:
        raise Conflict("A job needs at least one device", code="no_devices")
    plans = []
    for d in devices:
        it = session.get(DesignIteration, d["design_iteration_id"])
        if it is None:
            raise NotFound(f"No design iteration {d['design_iteration_id']}", code="iteration_not_found")
        if it.status == "superseded":
            raise Conflict(f"Design iteration {it.id} is superseded by a newer iteration", code="iteration_superseded")
        plans.append((it, session.get(Design, it.design_id), d.get("position") or {}))
    scopes = {(dz.process, dz.material, dz.product_family) for _, dz, _ in plans}
    if len(scopes) != 1:
        raise Conflict("All devices of a job must share process, material and product family; got "
                       + "; ".join(" / ".join(s) for s in sorted(scopes)), code="mixed_scope")
    process, material, family = scopes.pop()
    if lot.material != material:
        raise Conflict(f"Material lot {lot.lot_number} is {lot.material}, the designs need {material}",
                       code="lot_material_mismatch")
    job = Job(machine_id=machine_id, material_lot_id=lot.id, process=process, material=material,
              product_family=family, state="planned", build_parameters=build_parameters, created_by=actor.id)
    session.add(job)
    session.flush()
    scope = qualification.ensure_scope_for_job(session, actor=actor, machine_id=machine_id, process=process,
                                               material=material, product_family=family)
    if scope.qualified_material_supplier and lot.supplier != scope.qualified_material_supplier:
        detail = (f"material supplier changed from {scope.qualified_material_supplier} to {lot.supplier} "
                  f"(lot {lot.lot_number}, job {job.id})")
        if not qualification._already_triggered(session, scope, "material_changed", lot.supplier):
            qualification.raise_trigger(session, actor=actor, scope=scope, kind="material_changed", detail=detail,
                                        old_value=scope.qualified_material_supplier, new_value=lot.supplier)
    settings = settings_of(session)
    today = utcnow().date()
    created = []
    for it, design, position in plans:
        code = next_device_code(session)
        udi = None
        if design.gtin:
            expiry = today + timedelta(days=settings.udi_expiry_days) if settings.udi_expiry_days else None
            udi = Udi(gtin=design.gtin, production_date=today, expiry_date=expiry, lot=f"J{job.id}", serial=code)
        device = Device(device_code=code, job_id=job.id, kind="device", case_id=design.case_id,
                        design_iteration_id=it.id, regulatory_category=design.regulatory_category,
                        udi_element_string=udi.element_string() if udi else None,
                        udi_hri=udi.human_readable() if udi else None, position=position)
        session.add(device)
        session.flush()
        stages.create_steps(session, device=device)
        created.append(device)
    for c in coupons:
        device = Device(device_code=next_device_code(session), job_id=job.id, kind="coupon",
                        position={**(c.get("position") or {}), "label": c.get("label", "")})
        session.add(device)
        session.flush()
        created.append(device)
    session.refresh(job, ["devices"])
    record(session, actor=actor, action="job_created", record_type="job", record_id=job.id,
           new={"machine_id": machine_id, "material_lot": lot.lot_number, "scope_id": scope.id,
                "devices": [[d.device_code, d.kind, d.design_iteration_id, d.regulatory_category, d.udi_hri]
                            for d in created], "build_parameters": build_parameters})
    return job


def close_job(session: Session, *, actor: Principal, job_id: int, reason: str) -> Job:
    """Close a built job; the material lot's reuse count goes up by one."""
    job = get_job(session, job_id=job_id)
    if job.state != "released":
        raise Conflict(f"Job {job.id} is {job.state}; only a released job can be closed", code="job_not_released")
    job.state = "closed"
    record(session, actor=actor, action="job_closed", record_type="job", record_id=job.id,
           old={"state": "released"}, new={"state": "closed"}, reason=reason)
    from server.materials.service import record_use

    record_use(session, actor=actor, lot=get_lot(session, lot_id=job.material_lot_id), job_id=job.id)
    return job


def current_job(session: Session, *, machine_id: str) -> Job | None:
    """The machine's current job: the latest one not yet closed."""
    return session.scalar(select(Job).where(Job.machine_id == machine_id, Job.state != "closed")
                          .order_by(Job.id.desc()).limit(1))


def job_approvals(session: Session, *, job: Job) -> JobApprovals:
    """The approved build files of a job, in the shape the edge checks build files against."""
    files: dict[tuple[int, str, str], ApprovedBuildFile] = {}
    for device in job.devices:
        if device.kind != "device":
            continue
        it = session.get(DesignIteration, device.design_iteration_id)
        if it.status != "approved":
            continue
        for f in it.files:
            key = (it.id, f.file_name, f.sha256)
            if key not in files:
                files[key] = ApprovedBuildFile(file_name=f.file_name, sha256=f.sha256, size_bytes=f.size_bytes,
                                               design_iteration=str(it.id), device_codes=[])
            files[key].device_codes.append(device.device_code)
    return JobApprovals(machine_id=job.machine_id, job_id=str(job.id), files=list(files.values()))
