"""Machines: identity, location, reported versions, calibration/maintenance dates, maintenance log."""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, settings_of
from server.errors import Conflict, Forbidden
from server.models import Machine, MaintenanceRecord, utcnow
from server.qualification import service as qualification
from server.security import Principal
from server.db import get_or_not_found
from server.settings import MaintenanceKind

# Who may give the next maintenance date by hand instead of the computed one (with a reason).
SUPERVISORS = ("production_manager", "quality_engineer")


def get_machine(session: Session, *, machine_id: str) -> Machine:
    """The machine with this id, or NotFound."""
    return get_or_not_found(session, Machine, machine_id, f"No machine {machine_id}", code="machine_not_found")


def register_machine(session: Session, *, actor: Principal, machine_id: str, manufacturer: str, model: str,
                     serial_number: str, site: str, room: str, calibration_due: date | None,
                     maintenance_due: date | None, maintenance_interval_days: int | None = None) -> Machine:
    """Register a machine in its installation location."""
    if session.get(Machine, machine_id) is not None:
        raise Conflict(f"Machine {machine_id} is already registered", code="machine_exists")
    machine = Machine(id=machine_id, manufacturer=manufacturer, model=model, serial_number=serial_number,
                      site=site, room=room, calibration_due=calibration_due, maintenance_due=maintenance_due,
                      maintenance_interval_days=maintenance_interval_days)
    session.add(machine)
    session.flush()
    record(session, actor=actor, action="machine_registered", record_type="machine", record_id=machine_id,
           new={"manufacturer": manufacturer, "model": model, "serial_number": serial_number, "site": site,
                "room": room, "calibration_due": calibration_due, "maintenance_due": maintenance_due,
                "maintenance_interval_days": maintenance_interval_days})
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
                  maintenance_due: date | None, reason: str, maintenance_interval_days: int | None = None) -> Machine:
    """Record new calibration and preventive-maintenance due dates (after calibration, say) or a new interval."""
    machine = get_machine(session, machine_id=machine_id)
    fields = ("calibration_due", "maintenance_due", "maintenance_interval_days")
    old = {f: getattr(machine, f) for f in fields}
    if calibration_due is not None:
        machine.calibration_due = calibration_due
    if maintenance_due is not None:
        machine.maintenance_due = maintenance_due
    if maintenance_interval_days is not None:
        machine.maintenance_interval_days = maintenance_interval_days
    record(session, actor=actor, action="machine_due_dates_set", record_type="machine", record_id=machine_id,
           old=old, new={f: getattr(machine, f) for f in fields}, reason=reason)
    return machine


def maintenance_kinds(session: Session) -> dict[str, MaintenanceKind]:
    """The kinds of maintenance this plant logs (AMTRACE_MAINTENANCE_KINDS)."""
    return settings_of(session).maintenance_kinds


def log_maintenance(session: Session, *, actor: Principal, machine_id: str, kind: str, description: str,
                    next_maintenance_due: date | None = None,
                    due_override_reason: str | None = None) -> MaintenanceRecord:
    """Log maintenance of a configured kind. A preventive kind sets the next due date from the machine's interval; a
    supervisor may give another date with a reason; requalifying kinds (laser/optics replaced…) raise the trigger."""
    machine = get_machine(session, machine_id=machine_id)
    kinds = maintenance_kinds(session)
    rule = kinds.get(kind)
    if rule is None:
        raise Conflict(f"Maintenance kind '{kind}' is not one this plant logs; one of: {', '.join(sorted(kinds))}",
                       code="maintenance_kind_unknown")
    if next_maintenance_due is not None:
        if actor.role not in SUPERVISORS:
            raise Forbidden("Only a production manager or quality engineer may give the next maintenance date; it is "
                            "computed from the machine's maintenance interval", code="maintenance_due_override")
        if not (due_override_reason or "").strip():
            raise Conflict("Say why the next maintenance date differs from the machine's interval "
                           "(due_override_reason)", code="override_reason_required")
        due = next_maintenance_due
    else:
        if due_override_reason:
            raise Conflict("due_override_reason goes with next_maintenance_due; without it the date is computed",
                           code="override_reason_without_date")
        interval = machine.maintenance_interval_days
        due = utcnow().date() + timedelta(days=interval) if rule.preventive and interval else None
    requires = rule.requalifying
    entry = MaintenanceRecord(machine_id=machine_id, kind=kind, description=description,
                              requires_requalification=requires, performed_by=actor.id, next_maintenance_due=due,
                              due_override_reason=due_override_reason if next_maintenance_due is not None else None)
    session.add(entry)
    if due is not None:
        machine.maintenance_due = due
    session.flush()
    record(session, actor=actor, action="maintenance_logged", record_type="machine", record_id=machine_id,
           new={"maintenance_id": entry.id, "kind": kind, "description": description,
                "requires_requalification": requires, "next_maintenance_due": due,
                **({"due_override_reason": entry.due_override_reason} if entry.due_override_reason else {})})
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


def list_machines(session: Session) -> list[Machine]:
    """Every registered machine."""
    return list(session.scalars(select(Machine).order_by(Machine.id)))
