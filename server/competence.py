"""Competence (R14): a person performs a step on a machine only while authorised (trained) on that machine.

One rule for every door: the release gate (the same SQL expression inside its one query, current_authorisation),
the build stage, and the start and completion of cycles on furnaces, washers and sterilizers."""

from __future__ import annotations

from datetime import date

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from server.errors import Forbidden
from server.models import MachineAuthorisation, utcnow
from server.security import Principal


def current_authorisation(user_id, machine_id, on):
    """SQL: a current authorisation of user_id on machine_id on that day exists (values, columns or bind
    parameters): not revoked, and valid until that day or open-ended. The one rule, also inside the gate's query."""
    return exists().where(MachineAuthorisation.user_id == user_id, MachineAuthorisation.machine_id == machine_id,
                          MachineAuthorisation.revoked_at.is_(None),
                          MachineAuthorisation.valid_until.is_(None) | (MachineAuthorisation.valid_until >= on))


def is_authorised_on(session: Session, *, user_id: int, machine_id: str, on: date) -> bool:
    """True when the user holds a current authorisation for the machine on that date."""
    return bool(session.scalar(select(current_authorisation(user_id, machine_id, on))))


def require_authorised(session: Session, *, actor: Principal, machine_id: str, doing: str) -> None:
    """Refuse a person without a current authorisation on the machine, saying who, where and what."""
    if actor.kind != "user":
        return  # the server itself; agents perform no steps
    if not is_authorised_on(session, user_id=actor.id, machine_id=machine_id, on=utcnow().date()):
        raise Forbidden(f"{actor.full_name} is not authorised on machine {machine_id} (no current training "
                        f"authorisation): may not {doing}", code="operator_not_authorised")
