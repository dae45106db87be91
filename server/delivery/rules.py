"""The delivery step's rules, asked by the stage gates (R17): a delivery is performed by dispatching a delivery
list, and accepted only by the case's clinician or their delegate once the list has left."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.designs.service import is_case_clinician
from server.errors import Conflict, Forbidden
from server.models import Case, Device, Shipment, ShipmentItem, StageStep, User, utcnow
from server.security import Principal


def on_list(session: Session, device: Device) -> Shipment | None:
    """The delivery list a device is on, if any."""
    sid = session.scalar(select(ShipmentItem.shipment_id).where(ShipmentItem.device_id == device.id))
    return None if sid is None else session.get(Shipment, sid)


def check_delivery(session: Session, *, actor: Principal, device: Device, verb: str,
                   on_list_id: int | None) -> Shipment | None:
    """The rules of the delivery step (R17): it is performed by dispatching the device's delivery list, and
    accepted only by the case's clinician (or their delegate) once the list is dispatched."""
    shipment = on_list(session, device)
    if verb in ("start", "complete"):
        if shipment is None or shipment.id != on_list_id:
            where = "put it on a delivery list (POST /shipments)" if shipment is None else \
                f"dispatch its delivery list {shipment.id} (POST /shipments/{shipment.id}/dispatch)"
            raise Conflict(f"Cannot {verb} delivery of device {device.device_code} on its own: {where}",
                           code="delivery_needs_list")
        return shipment
    case = session.get(Case, device.case_id)
    if not is_case_clinician(case, actor):
        named = session.get(User, case.clinician_id) if case.clinician_id else None
        raise Forbidden(f"Only the clinician of case {case.id}"
                        + (f", {named.full_name} ({named.username})," if named else "")
                        + f" or the delegate they named may accept delivery of device {device.device_code}",
                        code="not_case_clinician")
    if shipment is None or shipment.state == "open":
        raise Conflict(f"Cannot accept delivery of device {device.device_code}: it has not been dispatched on a "
                       f"delivery list", code="delivery_needs_list")
    return shipment


def after_acceptance(session: Session, *, actor: Principal, shipment: Shipment) -> None:
    """Mark the list accepted once every device on it is."""
    steps = [session.scalar(select(StageStep).where(StageStep.device_id == i.device_id, StageStep.stage == "delivery"))
             for i in shipment.items]
    if all(s.state == "accepted" for s in steps) and shipment.state != "accepted":
        shipment.state, shipment.accepted_at = "accepted", utcnow()
        record(session, actor=actor, action="shipment_accepted", record_type="shipment", record_id=shipment.id,
               old={"state": "dispatched"}, new={"state": "accepted", "list_sha256": shipment.list_sha256})
