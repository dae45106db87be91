"""HTTP endpoints for qualification scopes, triggers and (re)qualification records."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.auth.deps import ANY_PERSON, require
from server.db import SessionDep
from server.errors import COMMON_ERRORS
from server.models import QualificationScope, Requalification, RequalificationTrigger, TestArtefact, utcnow
from server.qualification import service
from server.qualification.schemas import (ApproveIn, ArtefactIn, ArtefactOut, CriteriaIn, ExpiryCheckOut, ReasonIn,
                                          RequalificationCreate, RequalificationOut, ScopeCreate, ScopeOut,
                                          TriggerIn, TriggerOut)
from server.security import Principal

router = APIRouter(prefix="/qualification", tags=["qualification"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require(*ANY_PERSON))]
Quality = Annotated[Principal, Depends(require("quality_engineer"))]
Planner = Annotated[Principal, Depends(require("quality_engineer", "production_manager"))]
Tester = Annotated[Principal, Depends(require("quality_engineer", "operator"))]


@router.post("/scopes", response_model=ScopeOut, status_code=201)
def create_scope(body: ScopeCreate, session: SessionDep, actor: Quality) -> QualificationScope:
    """Declare a scope (unqualified until its initial qualification is approved)."""
    return service.create_scope(session, actor=actor, **body.model_dump())


@router.get("/scopes", response_model=list[ScopeOut])
def list_scopes(session: SessionDep, actor: Reader, machine_id: str | None = None) -> list[QualificationScope]:
    """Scopes with their state and validity."""
    return service.list_scopes(session, machine_id=machine_id)


@router.get("/scopes/{scope_id}", response_model=ScopeOut)
def get_scope(scope_id: int, session: SessionDep, actor: Reader) -> QualificationScope:
    """One scope."""
    return service.get_scope(session, scope_id=scope_id)


@router.get("/scopes/{scope_id}/triggers", response_model=list[TriggerOut])
def scope_triggers(scope_id: int, session: SessionDep, actor: Reader) -> list[RequalificationTrigger]:
    """Every trigger ever recorded on the scope, oldest first."""
    return service.triggers_of(session, scope_id=scope_id)


@router.post("/scopes/{scope_id}/triggers", response_model=TriggerOut, status_code=201)
def raise_trigger(scope_id: int, body: TriggerIn, session: SessionDep, actor: Planner) -> RequalificationTrigger:
    """Record a trigger raised by a person (material or handling change…)."""
    scope = service.get_scope(session, scope_id=scope_id)
    return service.raise_trigger(session, actor=actor, scope=scope, kind=body.kind, detail=body.detail)


@router.post("/scopes/{scope_id}/suspend", response_model=ScopeOut)
def suspend(scope_id: int, body: ReasonIn, session: SessionDep, actor: Quality) -> QualificationScope:
    """Suspend a scope."""
    return service.suspend(session, actor=actor, scope_id=scope_id, reason=body.reason)


@router.post("/expiry-check", response_model=ExpiryCheckOut)
def expiry_check(session: SessionDep, actor: Planner) -> ExpiryCheckOut:
    """Raise triggers for expired qualifications and calibrations (also done at each gate decision)."""
    triggers = service.apply_time_triggers(session, today=utcnow().date(), actor=actor)
    return ExpiryCheckOut(triggers=[TriggerOut.model_validate(t) for t in triggers])


@router.post("/requalifications", response_model=RequalificationOut, status_code=201)
def start(body: RequalificationCreate, session: SessionDep, actor: Planner) -> Requalification:
    """Open a (re)qualification record with its risk decision."""
    return service.start(session, actor=actor, **body.model_dump())


@router.get("/requalifications/{requalification_id}", response_model=RequalificationOut)
def get_requalification(requalification_id: int, session: SessionDep, actor: Reader) -> Requalification:
    """One (re)qualification record."""
    return service.get_requalification(session, requalification_id=requalification_id)


@router.put("/requalifications/{requalification_id}/criteria", response_model=RequalificationOut)
def set_criteria(requalification_id: int, body: CriteriaIn, session: SessionDep, actor: Quality) -> Requalification:
    """Set the acceptance criteria (refused once locked)."""
    return service.set_criteria(session, actor=actor, requalification_id=requalification_id,
                                criteria=[c.model_dump() for c in body.criteria])


@router.post("/requalifications/{requalification_id}/criteria/lock", response_model=RequalificationOut)
def lock_criteria(requalification_id: int, session: SessionDep, actor: Quality) -> Requalification:
    """Lock the acceptance criteria before any result is entered."""
    return service.lock_criteria(session, actor=actor, requalification_id=requalification_id)


@router.post("/requalifications/{requalification_id}/artefacts", response_model=ArtefactOut, status_code=201)
def add_artefact(requalification_id: int, body: ArtefactIn, session: SessionDep, actor: Tester) -> TestArtefact:
    """Enter a test artefact's result (judged against the locked criteria)."""
    return service.add_artefact(session, actor=actor, requalification_id=requalification_id, **body.model_dump())


@router.post("/requalifications/{requalification_id}/approve", response_model=RequalificationOut)
def approve(requalification_id: int, body: ApproveIn, session: SessionDep, actor: Quality) -> Requalification:
    """Approve with an electronic signature; the scope becomes qualified."""
    return service.approve(session, actor=actor, requalification_id=requalification_id, **body.model_dump())


@router.post("/requalifications/{requalification_id}/reject", response_model=RequalificationOut)
def reject(requalification_id: int, body: ReasonIn, session: SessionDep, actor: Quality) -> Requalification:
    """Close as failed; the scope is suspended."""
    return service.reject(session, actor=actor, requalification_id=requalification_id, reason=body.reason)
