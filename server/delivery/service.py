"""Delivery lists (R17): production puts released devices on a list for one clinician and dispatches it, signing
each device's delivery step as performed; the case's clinician (or their delegate) signs for them on receipt.

Each device's label data is read from the records it comes from (case, design, approval signatures, UDI) and
frozen into the list at dispatch; the list's SHA-256 is bound by every acceptance signature, so what the clinician
signed for is the list as it left."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.db import get_or_not_found
from server.designs.service import is_case_clinician, require_case_clinician
from server.errors import Conflict, Forbidden
from server.history.dhr import manifest
from server.jobs.service import get_device
from server.models import (Case, Design, DesignIteration, Device, Job, Shipment, ShipmentItem, Signature, StageStep,
                           User, utcnow)
from server.notifications.service import notify
from server.security import Principal, content_sha256
from server.stages import service as stages

# Label fields a device cannot be dispatched without (each named as people say it).
REQUIRED = {"udi_hri": "UDI", "intended_use": "intended use", "anatomical_site": "anatomical site",
            "imaging_date": "imaging date", "design_completed_on": "design completion date"}


def label_of(session: Session, device: Device) -> dict[str, Any]:
    """The device's label data as the records say now, with what is missing."""
    if device.kind != "device" or device.case_id is None:
        raise Conflict(f"{device.device_code} is a {device.kind}, not a device made for a patient: it has no label",
                       code="no_label")
    case = session.get(Case, device.case_id)
    it = session.get(DesignIteration, device.design_iteration_id)
    design = session.get(Design, it.design_id)
    approved = session.scalar(select(func.max(Signature.signed_at)).where(
        Signature.record_type == "design_iteration", Signature.record_id == str(it.id),
        Signature.meaning == "approved")) if it.status != "draft" else None
    kind = "Custom-made device" if device.regulatory_category == "custom_made" else "Patient-matched device"
    label = {"device_code": device.device_code, "udi_hri": device.udi_hri, "udi_element_string": device.udi_element_string,
             "regulatory_category": device.regulatory_category,
             "statement": f"{kind}, for the exclusive use of patient {case.patient_ref}",
             "design": design.name, "design_iteration": it.number, "intended_use": design.intended_use,
             "anatomical_site": design.anatomical_site, "imaging_date": case.imaging_date,
             "design_completed_on": None if approved is None else approved.date(),
             "institution": case.institution, "clinician": case.clinician, "patient_ref": case.patient_ref,
             "surgery_date": case.surgery_date, "material": session.get(Job, device.job_id).material}
    label["missing"] = [name for key, name in REQUIRED.items() if label[key] is None]
    return label


def read_label(session: Session, *, actor: Principal, device_code: str) -> dict[str, Any]:
    """A device's label data; it shows the patient's pseudonym, so the read is audited and a clinician reads only
    the labels of their cases."""
    device = get_device(session, device_code=device_code)
    label = label_of(session, device)
    require_case_clinician(session, session.get(Case, device.case_id), actor, "read its labels")
    record(session, actor=actor, action="label_read", record_type="device", record_id=device.device_code)
    return label


def _step(session: Session, device: Device, stage: str) -> StageStep:
    return session.scalar(select(StageStep).where(StageStep.device_id == device.id, StageStep.stage == stage))


def create(session: Session, *, actor: Principal, device_codes: list[str], note: str) -> Shipment:
    """Put released devices on a new delivery list; all go to one clinician at one institution."""
    if len(set(device_codes)) != len(device_codes):
        raise Conflict("A device is on the list twice", code="shipment_duplicate")
    devices, problems = [], []
    for code in device_codes:
        device = get_device(session, device_code=code)
        devices.append(device)
        if device.kind != "device":
            problems.append(f"{code} is a {device.kind}; coupons stay with the manufacturer")
            continue
        on = session.scalar(select(ShipmentItem.shipment_id).where(ShipmentItem.device_id == device.id))
        if on is not None:
            problems.append(f"{code} is already on delivery list {on}")
            continue
        release, delivery = _step(session, device, "release"), _step(session, device, "delivery")
        if device.state != "in_production" or release.state != "accepted" or delivery.state != "pending":
            problems.append(f"{code} is not ready to ship (device {device.state.replace('_', ' ')}, release "
                            f"{release.state.replace('_', ' ')}, delivery {delivery.state.replace('_', ' ')})")
            continue
        if missing := label_of(session, device)["missing"]:
            problems.append(f"{code} has no {', '.join(missing)} for its label")
    if problems:
        raise Conflict("Cannot make the delivery list: " + "; ".join(problems), code="shipment_refused")
    cases = {session.get(Case, d.case_id) for d in devices}
    clinicians = {c.clinician_id for c in cases}
    if None in clinicians:
        raise Conflict("Case " + ", ".join(str(c.id) for c in cases if c.clinician_id is None) + " names no "
                       "clinician as a user, so nobody could sign for it", code="shipment_refused")
    if len(clinicians) > 1 or len({c.institution for c in cases}) > 1:
        raise Conflict("A delivery list goes to one clinician at one institution; these devices are for "
                       + "; ".join(sorted({f"{c.clinician} at {c.institution}" for c in cases})),
                       code="shipment_mixed")
    case = next(iter(cases))
    shipment = Shipment(institution=case.institution, clinician_id=case.clinician_id, state="open", note=note,
                        created_by=actor.id, created_at=utcnow())
    session.add(shipment)
    session.flush()
    session.add_all(ShipmentItem(shipment_id=shipment.id, device_id=d.id) for d in devices)
    session.flush()
    session.refresh(shipment, ["items"])
    record(session, actor=actor, action="shipment_created", record_type="shipment", record_id=shipment.id,
           new={"devices": device_codes, "institution": case.institution, "note": note})
    return shipment


def ready(session: Session) -> list[dict[str, Any]]:
    """Released devices whose delivery is pending and which are on no list, by surgery date (soonest first)."""
    on_lists = select(ShipmentItem.device_id)
    released = select(StageStep.device_id).where(StageStep.stage == "release", StageStep.state == "accepted")
    q = (select(Device, Case).join(Case, Case.id == Device.case_id)
         .join(StageStep, (StageStep.device_id == Device.id) & (StageStep.stage == "delivery"))
         .where(Device.kind == "device", Device.state == "in_production", StageStep.state == "pending",
                Device.id.in_(released), Device.id.not_in(on_lists))
         .order_by(Case.surgery_date, Device.device_code).limit(500))
    out = []
    for device, case in session.execute(q):
        label = label_of(session, device)
        clinician = session.get(User, case.clinician_id) if case.clinician_id else None
        out.append({"device_code": device.device_code, "design": label["design"], "case_id": case.id,
                    "clinician": case.clinician, "clinician_username": clinician.username if clinician else None,
                    "institution": case.institution, "surgery_date": case.surgery_date, "missing": label["missing"]})
    return out


def get(session: Session, *, shipment_id: int) -> Shipment:
    """The delivery list with this id, or NotFound."""
    return get_or_not_found(session, Shipment, shipment_id, f"No delivery list {shipment_id}",
                            code="shipment_not_found")


def may_read(session: Session, shipment: Shipment, actor: Principal) -> bool:
    """Production and quality read every list; a clinician the lists of their cases (as clinician or delegate)."""
    if actor.role != "clinician":
        return True
    return actor.id == shipment.clinician_id or all(
        is_case_clinician(session.get(Case, session.get(Device, i.device_id).case_id), actor) for i in shipment.items)


def read(session: Session, *, actor: Principal, shipment_id: int) -> Shipment:
    """A delivery list (it shows the patients' pseudonyms: the read is audited)."""
    shipment = get(session, shipment_id=shipment_id)
    if not may_read(session, shipment, actor):
        raise Forbidden(f"Delivery list {shipment.id} is not addressed to you", code="not_case_clinician")
    record(session, actor=actor, action="shipment_read", record_type="shipment", record_id=shipment.id)
    return shipment


def listing(session: Session, *, actor: Principal, state: str | None) -> list[Shipment]:
    """Delivery lists, newest first; a clinician sees those addressed to them or to clinicians they act for."""
    q = select(Shipment).order_by(Shipment.id.desc()).limit(200)
    if state:
        q = q.where(Shipment.state == state)
    if actor.role == "clinician":
        acting_for = select(Case.clinician_id).where(Case.delegate_id == actor.id)
        q = q.where(or_(Shipment.clinician_id == actor.id, Shipment.clinician_id.in_(acting_for)))
    out = [s for s in session.scalars(q) if may_read(session, s, actor)]
    if out:
        record(session, actor=actor, action="shipments_listed", record_type="shipment",
               record_id=",".join(str(s.id) for s in out)[:64])
    return out


def list_content(session: Session, shipment: Shipment) -> dict[str, Any]:
    """What the list's SHA-256 covers: addressee, devices and their frozen labels."""
    return {"shipment_id": shipment.id, "institution": shipment.institution, "clinician_id": shipment.clinician_id,
            "note": shipment.note, "items": [{"device_id": i.device_id, "label": i.label} for i in shipment.items]}


def dispatch(session: Session, *, actor: Principal, shipment_id: int, password: str) -> Shipment:
    """Production dispatches the list: each device's delivery step is started and signed as performed (every rule
    of the stage gates applies), the labels are frozen and the list hashed; the clinician is notified."""
    shipment = get(session, shipment_id=shipment_id)
    if shipment.state != "open":
        raise Conflict(f"Delivery list {shipment.id} is already {shipment.state}", code="shipment_state")
    codes = []
    for item in shipment.items:
        device = session.get(Device, item.device_id)
        label = label_of(session, device)
        if label["missing"]:
            raise Conflict(f"Cannot dispatch delivery list {shipment.id}: {device.device_code} has no "
                           f"{', '.join(label['missing'])} for its label", code="shipment_refused")
        item.label = _jsonable(label)
        step = _step(session, device, "delivery")
        if step.state == "pending":
            stages.start(session, actor=actor, step_id=step.id, on_list=shipment.id)
        stages.complete(session, actor=actor, step_id=step.id, password=password, on_list=shipment.id,
                        result=f"dispatched on delivery list {shipment.id} to {shipment.institution}")
        codes.append(device.device_code)
    shipment.state, shipment.dispatched_by, shipment.dispatched_at = "dispatched", actor.id, utcnow()
    shipment.list_sha256 = content_sha256(list_content(session, shipment))
    record(session, actor=actor, action="shipment_dispatched", record_type="shipment", record_id=shipment.id,
           old={"state": "open"}, new={"state": "dispatched", "list_sha256": shipment.list_sha256, "devices": codes})
    receivers = {shipment.clinician_id} | {session.get(Case, session.get(Device, i.device_id).case_id).delegate_id
                                           for i in shipment.items}
    notify(session, user_ids={u for u in receivers if u is not None}, kind="shipment_dispatched",
           record_type="shipment", record_id=shipment.id,
           message=f"Delivery list {shipment.id} ({len(codes)} device{'s' if len(codes) > 1 else ''}: "
                   f"{', '.join(codes)}) was dispatched to you; sign for it on receipt")
    return shipment


def _jsonable(label: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in label.items()}


def accept(session: Session, *, actor: Principal, shipment_id: int, judgement: str, password: str) -> Shipment:
    """The clinician signs for every device on the list not yet accepted (one acceptance signature per device,
    each binding the list's hash); the list is accepted once all its devices are."""
    shipment = get(session, shipment_id=shipment_id)
    if shipment.state != "dispatched":
        raise Conflict(f"Delivery list {shipment.id} is {shipment.state}, not dispatched", code="shipment_state")
    for item in shipment.items:
        step = _step(session, session.get(Device, item.device_id), "delivery")
        if step.state == "completed":
            stages.accept(session, actor=actor, step_id=step.id, judgement=judgement, password=password)
    return shipment


def view(session: Session, shipment: Shipment) -> dict[str, Any]:
    """A delivery list as the API shows it: labels as frozen at dispatch (live before), and each device's
    dispatch and acceptance signatures."""
    clinician = session.get(User, shipment.clinician_id)
    items = []
    for item in shipment.items:
        device = session.get(Device, item.device_id)
        step = _step(session, device, "delivery")
        items.append({"device_code": device.device_code, "delivery_state": step.state,
                      "label": item.label if item.label is not None else label_of(session, device),
                      "dispatched": manifest(session, step.completion_signature_id),
                      "accepted": manifest(session, step.acceptance_signature_id)})
    return {"id": shipment.id, "state": shipment.state, "institution": shipment.institution,
            "clinician": clinician.full_name, "clinician_username": clinician.username, "note": shipment.note,
            "created_at": shipment.created_at, "dispatched_at": shipment.dispatched_at,
            "list_sha256": shipment.list_sha256, "accepted_at": shipment.accepted_at, "items": items}
