"""Material lots: certificate, type (virgin/used/blend), reuse count and limit, release status."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record
from server.errors import Conflict
from server.models import MaterialLot
from server.security import Principal
from server.db import get_or_not_found

LOT_TYPES = ("virgin", "used", "blend")


def get_lot(session: Session, *, lot_id: int) -> MaterialLot:
    """The lot with this id, or NotFound."""
    return get_or_not_found(session, MaterialLot, lot_id, f"No material lot {lot_id}", code="lot_not_found")


def register_lot(session: Session, *, actor: Principal, lot_number: str, material: str, supplier: str,
                 certificate_ref: str, lot_type: str, reuse_count: int, reuse_limit: int,
                 expires_on: date | None) -> MaterialLot:
    """Register a lot with its certificate; it is released for use."""
    if lot_type not in LOT_TYPES:
        raise Conflict(f"Lot type must be one of {', '.join(LOT_TYPES)}", code="lot_type")
    if session.scalar(select(MaterialLot.id).where(MaterialLot.lot_number == lot_number)) is not None:
        raise Conflict(f"Material lot {lot_number} is already registered", code="lot_exists")
    lot = MaterialLot(lot_number=lot_number, material=material, supplier=supplier, certificate_ref=certificate_ref,
                      lot_type=lot_type, reuse_count=reuse_count, reuse_limit=reuse_limit, expires_on=expires_on,
                      status="released")
    session.add(lot)
    session.flush()
    record(session, actor=actor, action="material_lot_registered", record_type="material_lot", record_id=lot.id,
           new={"lot_number": lot_number, "material": material, "supplier": supplier,
                "certificate_ref": certificate_ref, "lot_type": lot_type, "reuse_count": reuse_count,
                "reuse_limit": reuse_limit, "expires_on": expires_on})
    return lot


def set_status(session: Session, *, actor: Principal, lot_id: int, status: str, reason: str) -> MaterialLot:
    """Quarantine or release a lot, with the reason."""
    lot = get_lot(session, lot_id=lot_id)
    if status not in ("released", "quarantined"):
        raise Conflict("Status must be released or quarantined", code="lot_status")
    old = lot.status
    lot.status = status
    record(session, actor=actor, action="material_lot_status", record_type="material_lot", record_id=lot.id,
           old={"status": old}, new={"status": status}, reason=reason)
    return lot


def record_use(session: Session, *, actor: Principal, lot: MaterialLot, job_id: int) -> None:
    """Count one more pass of the lot through a build (at job close)."""
    old = lot.reuse_count
    lot.reuse_count += 1
    record(session, actor=actor, action="material_lot_used", record_type="material_lot", record_id=lot.id,
           old={"reuse_count": old}, new={"reuse_count": lot.reuse_count, "job_id": job_id})


def lot_problems(lot: MaterialLot, *, today: date) -> list[str]:
    """Why the lot may not be used in a new build (empty when it may)."""
    problems = []
    if lot.status != "released":
        problems.append(f"material lot {lot.lot_number} is {lot.status}")
    if lot.expires_on is not None and lot.expires_on < today:
        problems.append(f"material lot {lot.lot_number} expired on {lot.expires_on:%d %b %Y}")
    if lot.reuse_count >= lot.reuse_limit:
        problems.append(f"material lot {lot.lot_number} has been used {lot.reuse_count} times, "
                        f"its reuse limit is {lot.reuse_limit}")
    return problems
