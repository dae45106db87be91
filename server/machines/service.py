"""Machines: identity, location, reported versions, calibration/maintenance dates, maintenance log."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, settings_of
from server.errors import Conflict
from server.models import Machine, MaintenanceRecord, utcnow
from server.qualification import service as qualification
from server.security import Principal
from server.db import get_or_not_found


def get_machine(session: Session, *, machine_id: str) -> Machine:
    """The machine with this id, or NotFound."""
    return get_or_not_found(session, Machine, machine_id, f"No machine {machine_id}", code="machine_not_found")


def register_machine(session: Session, *, actor: Principal, machine_id: str, manufacturer: str, model: str,
                     serial_number: str, site: str, room: str, calibration_due: date | None,
                     maintenance_due: date | None) -> Machine:
    """Register a machine in its installation location."""
    if session.get(Machine, machine_id) is not None:
        raise Conflict(f"Machine {machine_id} is already registered", code="machine_exists")
    machine = Machine(id=machine_id, manufacturer=manufacturer, model=model, serial_number=serial_number,
                      site=site, room=room, calibration_due=calibration_due, maintenance_due=maintenance_due)
    session.add(machine)
    session.flush()
    record(session, actor=actor, action="machine_registered", record_type="machine", record_id=machine_id,
           new={"manufacturer": manufacturer, "model": model, "serial_number": serial_number, "site": site,
                "room": room, "calibration_due": calibration_due, "maintenance_due": maintenance_due})
    return machine


def relocate(session: Session, *, actor: Principal, machine_id: str, site: str, room: str,
             reason: str) -> Machine:
    """Record a physical move; qualified scopes need requalification (qualified in its location only)."""
    machine = get_machine(session, machine_id=machine_id)
    old = {"site": machine.site, "room": machine.room}
    if (site, room) == (machine.site, machine.room):
        raise Conflict(f"Machine {machine_id} is already in {site} / {room}", code="same_location")
    machine.site, machine.room = site, room
    record(session, actor=actor, action="machine_relocated", record_type="machine", record_id=machine_id,
           old=old, new={"site": site, "room": room}, reason=reason)
    qualification.trigger_machine_scopes(
        session, actor=actor, machine_id=machine_id, kind="relocated",
        detail=f"machine moved from {old['site']} / {old['room']} to {site} / {room}",
        old_value=f"{old['site']} / {old['room']}", new_value=f"{site} / {room}")
    return machine


def set_due_dates(session: Session, *, actor: Principal, machine_id: str, calibration_due: date | None,
                  maintenance_due: date | None, reason: str) -> Machine:
    """Record new calibration and preventive-maintenance due dates (after calibration, say)."""
    machine = get_machine(session, machine_id=machine_id)
    old = {"calibration_due": machine.calibration_due, "maintenance_due": machine.maintenance_due}
    if calibration_due is not None:
        machine.calibration_due = calibration_due
    if maintenance_due is not None:
        machine.maintenance_due = maintenance_due
    record(session, actor=actor, action="machine_due_dates_set", record_type="machine", record_id=machine_id,
           old=old, new={"calibration_due": machine.calibration_due, "maintenance_due": machine.maintenance_due},
           reason=reason)
    return machine


def log_maintenance(session: Session, *, actor: Principal, machine_id: str, kind: str, description: str,
                    next_maintenance_due: date | None) -> MaintenanceRecord:
    """Log maintenance; kinds configured as requalifying (laser/optics replaced…) trigger requalification."""
    machine = get_machine(session, machine_id=machine_id)
    requires = kind in settings_of(session).requalifying_maintenance_kinds
    entry = MaintenanceRecord(machine_id=machine_id, kind=kind, description=description,
                              requires_requalification=requires, performed_by=actor.id,
                              next_maintenance_due=next_maintenance_due)
    session.add(entry)
    if next_maintenance_due is not None:
        machine.maintenance_due = next_maintenance_due
    session.flush()
    record(session, actor=actor, action="maintenance_logged", record_type="machine", record_id=machine_id,
           new={"maintenance_id": entry.id, "kind": kind, "description": description,
                "requires_requalification": requires, "next_maintenance_due": next_maintenance_due})
    if requires:
        qualification.trigger_machine_scopes(
            session, actor=actor, machine_id=machine_id, kind="maintenance",
            detail=f"maintenance '{kind.replace('_', ' ')}' logged ({description})", new_value=kind)
    return entry


def maintenance_log(session: Session, *, machine_id: str) -> list[MaintenanceRecord]:
    """A machine's maintenance log, oldest first."""
    get_machine(session, machine_id=machine_id)
    return list(session.scalars(select(MaintenanceRecord).where(MaintenanceRecord.machine_id == machine_id)
                                .order_by(MaintenanceRecord.id)))


def report_identity(session: Session, *, actor: Principal, machine_id: str, manufacturer: str,
                    model: str | None, serial_number: str, software_revision: str | None,
                    hardware_revision: str | None, firmware_revision: str | None,
                    build_prep_software: str | None) -> Machine:
    """Store the identity and versions the edge read from the machine; a changed revision triggers requalification.

    Fields the machine does not offer (None) keep what was stored: "not offered" is not a change."""
    machine = get_machine(session, machine_id=machine_id)
    if (serial_number != machine.serial_number or manufacturer != machine.manufacturer
            or (model is not None and model != machine.model)):
        record(session, actor=actor, action="identity_mismatch", record_type="machine", record_id=machine_id,
               old={"manufacturer": machine.manufacturer, "model": machine.model,
                    "serial_number": machine.serial_number},
               new={"manufacturer": manufacturer, "model": model, "serial_number": serial_number})
        raise Conflict(f"Machine {machine_id} is registered as {machine.manufacturer} {machine.model} serial "
                       f"{machine.serial_number}, but the edge reports {manufacturer} {model or '(no model)'} serial "
                       f"{serial_number}", code="identity_mismatch", keep_audit=True)
    old = {"software_revision": machine.software_revision, "firmware_revision": machine.firmware_revision,
           "hardware_revision": machine.hardware_revision, "build_prep_software": machine.build_prep_software}
    if software_revision is not None:
        machine.software_revision = software_revision
    if hardware_revision is not None:
        machine.hardware_revision = hardware_revision
    if firmware_revision is not None:
        machine.firmware_revision = firmware_revision
    if build_prep_software is not None:
        machine.build_prep_software = build_prep_software
    machine.identity_reported_at = utcnow()
    new = {"software_revision": machine.software_revision, "firmware_revision": machine.firmware_revision,
           "hardware_revision": machine.hardware_revision, "build_prep_software": machine.build_prep_software}
    if new != old:
        record(session, actor=actor, action="identity_reported", record_type="machine", record_id=machine_id,
               old=old, new=new)
    qualification.check_machine_against_baselines(session, actor=actor, machine=machine)
    return machine
