"""HTTP endpoints for retained samples."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from server.auth.deps import require
from server.db import SessionDep
from server.errors import COMMON_ERRORS
from server.samples import service
from server.samples.schemas import SampleCreate, SampleDisposal, SampleMove, SampleOut, SampleWithdrawal
from server.security import Principal

router = APIRouter(prefix="/samples", tags=["retained samples"], responses=COMMON_ERRORS)
Keepers = Annotated[Principal, Depends(require("production_manager", "quality_engineer"))]
Quality = Annotated[Principal, Depends(require("quality_engineer"))]


@router.post("", response_model=SampleOut, status_code=201)
def register(body: SampleCreate, session: SessionDep, actor: Keepers) -> dict:
    """Keep a coupon or a device as a retained sample, with its location, condition and retention date."""
    return service.describe(session, service.register(session, actor=actor, **body.model_dump()))


@router.get("", response_model=list[SampleOut])
def list_samples(session: SessionDep, actor: Keepers, job_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
                 state: Literal["stored", "withdrawn", "disposed"] | None = None) -> list[dict]:
    """Retained samples, optionally of one job or in one state."""
    return [service.describe(session, s) for s in service.list_samples(session, job_id=job_id, state=state)]


@router.get("/{sample_id}", response_model=SampleOut)
def get(sample_id: int, session: SessionDep, actor: Keepers) -> dict:
    """One sample with its chain of custody."""
    return service.describe(session, service.get_sample(session, sample_id))


@router.post("/{sample_id}/moves", response_model=SampleOut)
def move(sample_id: int, body: SampleMove, session: SessionDep, actor: Keepers) -> dict:
    """Move a stored sample (recorded with the reason)."""
    return service.describe(session, service.move(session, actor=actor, sample_id=sample_id, **body.model_dump()))


@router.post("/{sample_id}/withdrawals", response_model=SampleOut)
def withdraw(sample_id: int, body: SampleWithdrawal, session: SessionDep, actor: Quality) -> dict:
    """Withdraw a stored sample for a destructive test: needs the quality engineer's signature."""
    return service.describe(session, service.withdraw(session, actor=actor, sample_id=sample_id, **body.model_dump()))


@router.post("/{sample_id}/disposals", response_model=SampleOut)
def dispose(sample_id: int, body: SampleDisposal, session: SessionDep, actor: Quality) -> dict:
    """Dispose of a sample after its retention date: needs the quality engineer's signature."""
    return service.describe(session, service.dispose(session, actor=actor, sample_id=sample_id, **body.model_dump()))
