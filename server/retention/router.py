"""HTTP endpoints for retention: how long a record is kept, and the signed purge of a job's records after it."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from server.audit.service import settings_of
from server.auth.deps import require
from server.db import SessionDep, begin_read
from server.errors import COMMON_ERRORS, Conflict
from server.retention import purge as service
from server.security import Principal

router = APIRouter(prefix="/retention", tags=["retention"], responses=COMMON_ERRORS)
Readers = Annotated[Principal, Depends(require("quality_engineer", "production_manager", "admin"))]
Admin = Annotated[Principal, Depends(require("admin"))]
RecordType = Literal["job", "device", "cycle", "nonconformity", "signature"]
KnownType = Literal["job", "device", "cycle", "nonconformity", "signature", "design_iteration", "material_lot"]


class KeptOut(BaseModel):
    """How long a record is kept, and why."""

    record: str
    retain_until: date | None = Field(description="None: kept until further notice (a device it serves is not "
                                                   "released, or it is a plant-wide record)")
    because: str
    devices: list[str]
    job_id: int | None


class PurgeIn(BaseModel):
    """A purge after retention: the record (its job is purged), why, and the administrator's signature."""

    record_type: RecordType
    record_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=2000)
    password: str = Field(min_length=1, max_length=256)


def _out(k: service.Kept) -> KeptOut:
    return KeptOut(record=k.record, retain_until=k.until, because=k.because, devices=k.devices, job_id=k.job_id)


@router.get("/records/{record_type}/{record_id}", response_model=KeptOut)
def kept(record_type: KnownType, record_id: str, session: SessionDep, actor: Readers) -> KeptOut:
    """Until when a job, device, cycle, nonconformity, signature, design iteration or material lot is kept: the latest
    date of the devices it serves."""
    begin_read(session)
    return _out(service.kept(session, record_type, record_id))


@router.delete("/records/{record_type}/{record_id}", response_model=KeptOut,
               responses={409: {"description": "Under retention (naming the record and its date), or past it: a "
                                               "purge needs an administrator's signature (POST /retention/purge)"}})
def delete(record_type: RecordType, record_id: str, session: SessionDep, actor: Admin) -> KeptOut:
    """Records are never deleted one by one: refused under retention (with the date), else sent to the signed purge."""
    begin_read(session)
    k = service.refuse_under_retention(session, record_type, record_id)
    raise Conflict(f"{k.record} is past retention ({k.until}); records are removed only by a signed purge of their "
                   f"job: POST /api/v1/retention/purge", code="purge_needs_signature")


@router.post("/purge")
def purge(body: PurgeIn, session: SessionDep, actor: Admin) -> dict[str, Any]:
    """Purge the job holding the record, every device of it past retention, with the administrator's signature;
    answers the tombstone written into the audit chain."""
    tombstone = service.purge(session, actor=actor, **body.model_dump())
    session.commit()
    service.remove_archives(settings_of(session), tombstone)
    return tombstone
