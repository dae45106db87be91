"""HTTP endpoints for nonconformities raised by people and their disposition."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.auth.deps import require
from server.db import SessionDep
from server.errors import COMMON_ERRORS, Forbidden
from server.models import Nonconformity
from server.nonconformities import service
from server.nonconformities.schemas import DispositionIn, NonconformityIn, NonconformityOut
from server.security import Principal

router = APIRouter(prefix="/nonconformities", tags=["nonconformities"], responses=COMMON_ERRORS)
Raiser = Annotated[Principal, Depends(require("operator", "production_manager", "quality_engineer",
                                              "design_engineer", "clinician"))]
# Designers read the nonconformities of their own designs (R16: notified, and able to see what they were told).
Reader = Annotated[Principal, Depends(require("operator", "production_manager", "quality_engineer",
                                              "design_engineer"))]
Quality = Annotated[Principal, Depends(require("quality_engineer"))]


@router.post("", response_model=NonconformityOut, status_code=201)
def raise_nc(body: NonconformityIn, session: SessionDep, actor: Raiser) -> Nonconformity:
    """Raise a nonconformity; it blocks its device or job until dispositioned."""
    return service.raise_nonconformity(session, actor=actor, **body.model_dump())


@router.get("", response_model=list[NonconformityOut])
def list_ncs(session: SessionDep, actor: Reader, state: str | None = None) -> list[Nonconformity]:
    """Nonconformities, optionally only open or dispositioned ones."""
    return service.readable(session, actor=actor, state=state)


@router.get("/{nc_id}", response_model=NonconformityOut)
def get_nc(nc_id: int, session: SessionDep, actor: Reader) -> Nonconformity:
    """One nonconformity (a designer: one of their designs')."""
    nc = service.get_nonconformity(session, nc_id=nc_id)
    if not service.may_read(session, actor=actor, nc=nc):
        raise Forbidden(f"Nonconformity {nc_id} does not concern a design of yours", code="nonconformity_not_yours")
    return nc


@router.post("/{nc_id}/disposition", response_model=NonconformityOut)
def disposition(nc_id: int, body: DispositionIn, session: SessionDep, actor: Quality) -> Nonconformity:
    """Disposition with the quality engineer's signature."""
    return service.disposition(session, actor=actor, nc_id=nc_id, **body.model_dump())
