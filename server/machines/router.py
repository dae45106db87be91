"""HTTP endpoints for machines and their maintenance log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.auth.deps import ANY_PERSON, require
from server.db import SessionDep
from server.errors import COMMON_ERRORS
from server.machines import service
from server.machines.schemas import (DueDatesIn, MachineCreate, MachineOut, MaintenanceIn, MaintenanceKindOut,
                                     MaintenanceOut, RelocateIn)
from server.models import Machine, MaintenanceRecord
from server.security import Principal

router = APIRouter(prefix="/machines", tags=["machines"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require(*ANY_PERSON))]
Manager = Annotated[Principal, Depends(require("production_manager", "admin"))]
Upkeep = Annotated[Principal, Depends(require("production_manager", "quality_engineer"))]
Maintainer = Annotated[Principal, Depends(require("operator", "production_manager"))]


@router.post("", response_model=MachineOut, status_code=201)
def register(body: MachineCreate, session: SessionDep, actor: Manager) -> Machine:
    """Register a machine in its installation location."""
    data = body.model_dump()
    return service.register_machine(session, actor=actor, machine_id=data.pop("id"), **data)


@router.get("", response_model=list[MachineOut])
def list_machines(session: SessionDep, actor: Reader) -> list[Machine]:
    """All machines."""
    return service.list_machines(session)


@router.get("/maintenance/kinds", response_model=list[MaintenanceKindOut])
def maintenance_kinds(session: SessionDep, actor: Reader) -> list[MaintenanceKindOut]:
    """The kinds of maintenance that may be logged, and which set the due date or need requalification."""
    return [MaintenanceKindOut(kind=k, **rule.model_dump()) for k, rule in service.maintenance_kinds(session).items()]


@router.get("/{machine_id}", response_model=MachineOut)
def get(machine_id: str, session: SessionDep, actor: Reader) -> Machine:
    """One machine."""
    return service.get_machine(session, machine_id=machine_id)


@router.post("/{machine_id}/relocation", response_model=MachineOut)
def relocate(machine_id: str, body: RelocateIn, session: SessionDep, actor: Manager) -> Machine:
    """Record a physical move; qualified scopes need requalification."""
    return service.relocate(session, actor=actor, machine_id=machine_id, **body.model_dump())


@router.post("/{machine_id}/due-dates", response_model=MachineOut)
def due_dates(machine_id: str, body: DueDatesIn, session: SessionDep, actor: Upkeep) -> Machine:
    """Record new calibration / maintenance due dates."""
    return service.set_due_dates(session, actor=actor, machine_id=machine_id, **body.model_dump())


@router.post("/{machine_id}/maintenance", response_model=MaintenanceOut, status_code=201)
def maintenance(machine_id: str, body: MaintenanceIn, session: SessionDep, actor: Maintainer) -> MaintenanceRecord:
    """Log maintenance; requalifying kinds trigger requalification."""
    return service.log_maintenance(session, actor=actor, machine_id=machine_id, **body.model_dump())


@router.get("/{machine_id}/maintenance", response_model=list[MaintenanceOut])
def maintenance_log(machine_id: str, session: SessionDep, actor: Reader) -> list[MaintenanceRecord]:
    """The machine's maintenance log."""
    return service.maintenance_log(session, machine_id=machine_id)
