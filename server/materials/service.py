"""Material lots: certificate, type (virgin/used/blend), reuse count and limit, and status: incoming until a
quality engineer releases the lot (signed), released, or quarantined."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher
from server.auth.esign import sign
from server.errors import Conflict
from server.models import MaterialLot, utcnow
from server.security import Principal, content_sha256
from server.db import get_or_not_found

LOT_TYPES = ("virgin", "used", "blend")


def get_lot(session: Session, *, lot_id: int) -> MaterialLot:
    """The lot with this id, or NotFound."""
    return get_or_not_found(session, MaterialLot, lot_id, f"No material lot {lot_id}", code="lot_not_found")


def register_lot(session: Session, *, actor: Principal, lot_number: str, material: str, supplier: str,
                 certificate_ref: str, lot_type: str, reuse_count: int, reuse_limit: int,
                 expires_on: date | None) -> MaterialLot:
    """Register a lot with its certificate: incoming, not usable until a quality engineer releases it (R15)."""
    if lot_type not in LOT_TYPES:
        raise Conflict(f"Lot type must be one of {', '.join(LOT_TYPES)}", code="lot_type")
    if session.scalar(select(MaterialLot.id).where(MaterialLot.lot_number == lot_number)) is not None:
        raise Conflict(f"Material lot {lot_number} is already registered", code="lot_exists")
    if expires_on is not None and expires_on < utcnow().date():
        raise Conflict(f"Material lot {lot_number} expired on {expires_on:%d %b %Y}: an expired lot is not taken in",
                       code="lot_expired")
    lot = MaterialLot(lot_number=lot_number, material=material, supplier=supplier, certificate_ref=certificate_ref,
                      lot_type=lot_type, reuse_count=reuse_count, reuse_limit=reuse_limit, expires_on=expires_on,
                      status="incoming")
    session.add(lot)
    session.flush()
    record(session, actor=actor, action="material_lot_registered", record_type="material_lot", record_id=lot.id,
           new={"lot_number": lot_number, "material": material, "supplier": supplier,
                "certificate_ref": certificate_ref, "lot_type": lot_type, "reuse_count": reuse_count,
                "reuse_limit": reuse_limit, "expires_on": expires_on, "status": "incoming"})
    return lot


def release_content(lot: MaterialLot) -> dict[str, Any]:
    """What a quality engineer's release of a lot binds to: the lot as inspected, with its certificate."""
    return {"id": lot.id, "lot_number": lot.lot_number, "material": lot.material, "supplier": lot.supplier,
            "certificate_ref": lot.certificate_ref, "lot_type": lot.lot_type, "reuse_limit": lot.reuse_limit,
            "expires_on": lot.expires_on.isoformat() if lot.expires_on else None}


@register_record_hasher("material_lot")
def _rehash(session: Session, record_id: str) -> str | None:
    lot = session.get(MaterialLot, int(record_id))
    return None if lot is None else content_sha256(release_content(lot))


def set_status(session: Session, *, actor: Principal, lot_id: int, status: str, reason: str,
               password: str | None = None) -> MaterialLot:
    """Quarantine a lot (reason), or release it after incoming inspection or quarantine (reason and the quality
    engineer's signature, bound to the lot and its certificate)."""
    lot = get_lot(session, lot_id=lot_id)
    if status not in ("released", "quarantined"):
        raise Conflict("Status must be released or quarantined", code="lot_status")
    old = lot.status
    new: dict[str, Any] = {"status": status}
    if status == "released" and old != "released":
        if not password:
            raise Conflict(f"Releasing material lot {lot.lot_number} needs the quality engineer's signature "
                           f"(password)", code="lot_release_signature")
        expired = lot.expires_on is not None and lot.expires_on < utcnow().date()
        if expired:
            raise Conflict(f"Material lot {lot.lot_number} expired on {lot.expires_on:%d %b %Y} and cannot be "
                           f"released", code="lot_expired")
        sig = sign(session, signer=actor, password=password, meaning="approved", record_type="material_lot",
                   record_id=lot.id, record_sha256=content_sha256(release_content(lot)),
                   allowed_roles=("quality_engineer",))
        new["signature_id"] = sig.id
    lot.status = status
    record(session, actor=actor, action="material_lot_status", record_type="material_lot", record_id=lot.id,
           old={"status": old}, new=new, reason=reason)
    return lot


def record_use(session: Session, *, actor: Principal, lot: MaterialLot, job_id: int) -> None:
    """Count one more pass of the lot through a build (at job close)."""
    old = lot.reuse_count
    lot.reuse_count += 1
    record(session, actor=actor, action="material_lot_used", record_type="material_lot", record_id=lot.id,
           old={"reuse_count": old}, new={"reuse_count": lot.reuse_count, "job_id": job_id})


def status_problems(lot: MaterialLot) -> list[str]:
    """Why nothing made from the lot may go on now: quarantined, or never released after incoming inspection."""
    if lot.status == "incoming":
        return [f"material lot {lot.lot_number} has not passed incoming inspection (not released by a quality "
                f"engineer)"]
    if lot.status != "released":
        return [f"material lot {lot.lot_number} is {lot.status}"]
    return []


def lot_problems(lot: MaterialLot, *, today: date) -> list[str]:
    """Why the lot may not be used in a new build (empty when it may)."""
    problems = status_problems(lot)
    if lot.expires_on is not None and lot.expires_on < today:
        problems.append(f"material lot {lot.lot_number} expired on {lot.expires_on:%d %b %Y}")
    if lot.reuse_count >= lot.reuse_limit:
        problems.append(f"material lot {lot.lot_number} has been used {lot.reuse_count} times, "
                        f"its reuse limit is {lot.reuse_limit}")
    return problems


def list_lots(session: Session) -> list[MaterialLot]:
    """Every material lot."""
    return list(session.scalars(select(MaterialLot).order_by(MaterialLot.id)))
