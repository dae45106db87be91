"""HTTP endpoints for the per-device stage gates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.auth.deps import ANY_PERSON, require
from server.db import SessionDep
from server.errors import COMMON_ERRORS
from server.jobs.service import get_device
from server.models import StageStep, utcnow
from server.security import Principal
from server.stages import release_hooks, service
from server.stages.schemas import AcceptIn, CompleteIn, ImpactAssessmentOut, ImpactIn, StepOut

router = APIRouter(tags=["stage gates"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require(*ANY_PERSON))]
Performer = Annotated[Principal, Depends(require("operator", "quality_engineer", "production_manager"))]
Acceptor = Annotated[Principal, Depends(require("production_manager", "quality_engineer", "clinician"))]
Assessor = Annotated[Principal, Depends(require("production_manager", "quality_engineer"))]


def _out(step: StageStep) -> StepOut:
    out = StepOut.model_validate(step)
    out.overdue = step.state != "accepted" and utcnow() > step.deadline
    return out


@router.get("/devices/{device_code}/stages", response_model=list[StepOut])
def device_stages(device_code: str, session: SessionDep, actor: Reader) -> list[StepOut]:
    """A device's stage steps in order, overdue ones flagged."""
    device = get_device(session, device_code=device_code)
    return [_out(s) for s in service.steps_of(session, device_id=device.id)]


@router.get("/stages/overdue", response_model=list[StepOut])
def overdue(session: SessionDep, actor: Assessor) -> list[StepOut]:
    """Every step past its deadline and not yet accepted."""
    return [_out(s) for s in service.overdue(session, now=utcnow())]


@router.post("/stages/steps/{step_id}/start", response_model=StepOut)
def start(step_id: int, session: SessionDep, actor: Performer) -> StepOut:
    """Start a step (refused out of order, with the reason)."""
    return _out(service.start(session, actor=actor, step_id=step_id))


@router.post("/stages/steps/{step_id}/complete", response_model=StepOut)
def complete(step_id: int, body: CompleteIn, session: SessionDep, actor: Performer) -> StepOut:
    """Complete a step with the performer's signature."""
    return _out(service.complete(session, actor=actor, step_id=step_id, **body.model_dump()))


@router.post("/stages/steps/{step_id}/accept", response_model=StepOut)
def accept(step_id: int, body: AcceptIn, session: SessionDep, actor: Acceptor) -> StepOut:
    """Accept a completed step with a second person's signature (a release also seals the device record)."""
    series = service.read_release_series(session, actor=actor, step_id=step_id, password=body.password)
    step = service.accept(session, actor=actor, step_id=step_id, series=series, **body.model_dump())
    out = _out(step)
    if out.stage == "release" and series is not None:
        # The release (and its seal) commit first; then the subscribers act on it (the device's archive is written
        # from the points the release read; a failure leaves the release standing and the archive to the sweep).
        session.commit()
        release_hooks.committed(session, device_id=step.device_id, prepared=series)
    return out


@router.post("/stages/steps/{step_id}/impact-assessment", response_model=StepOut)
def impact(step_id: int, body: ImpactIn, session: SessionDep, actor: Assessor) -> StepOut:
    """Record a signed impact assessment of an overdue step (earlier ones are kept)."""
    return _out(service.assess_impact(session, actor=actor, step_id=step_id, assessment=body.assessment,
                                      password=body.password))


@router.get("/stages/steps/{step_id}/impact-assessments", response_model=list[ImpactAssessmentOut])
def impact_history(step_id: int, session: SessionDep, actor: Reader) -> list[ImpactAssessmentOut]:
    """Every impact assessment of a step with its signature, oldest first."""
    return [ImpactAssessmentOut.model_validate(a) for a in service.assessments_of(session, step_id=step_id)]
