"""HTTP endpoints for validated cycle recipes, process cycles and manual steps."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from server.auth.deps import ANY_PERSON, require
from server.cycles import service
from server.cycles.views import cycle_view, cycle_views, manual_steps_of, step_view
from server.cycles.schemas import (CycleCompleteIn, CycleOut, CycleStartIn, ManualStepIn, ManualStepOut,
                                   PasswordIn, RecipeIn, RecipeOut)
from server.db import SessionDep
from server.errors import COMMON_ERRORS, ErrorBody
from server.timeseries.influx import InfluxQL
from server.models import CycleRecipe
from server.security import Principal

router = APIRouter(tags=["cycles"], responses={
    **COMMON_ERRORS, 503: {"model": ErrorBody, "description": "InfluxDB unavailable or refused the query"}})
Reader = Annotated[Principal, Depends(require(*ANY_PERSON))]
Quality = Annotated[Principal, Depends(require("quality_engineer"))]
Performer = Annotated[Principal, Depends(require("operator", "production_manager", "quality_engineer"))]


def influx_client(request: Request) -> InfluxQL:
    """The app's InfluxQL client, made once from its settings."""
    client = getattr(request.app.state, "influxql", None)
    if client is None:
        client = request.app.state.influxql = InfluxQL.from_settings(request.app.state.settings)
    return client


Influx = Annotated[InfluxQL, Depends(influx_client)]


@router.post("/cycles/recipes", response_model=RecipeOut, status_code=201)
def create_recipe(body: RecipeIn, session: SessionDep, actor: Quality) -> CycleRecipe:
    """Create a new draft version of a validated cycle recipe."""
    return service.create_recipe(session, actor=actor, name=body.name, parameters=body.parameters)


@router.get("/cycles/recipes", response_model=list[RecipeOut])
def list_recipes(session: SessionDep, actor: Reader, name: str | None = None) -> list[CycleRecipe]:
    """Recipe versions, newest first within each name."""
    return service.list_recipes(session, name=name)


@router.get("/cycles/recipes/{recipe_id}", response_model=RecipeOut)
def get_recipe(recipe_id: int, session: SessionDep, actor: Reader) -> CycleRecipe:
    """One recipe version."""
    return service.get_recipe(session, recipe_id=recipe_id)


@router.post("/cycles/recipes/{recipe_id}/approve", response_model=RecipeOut)
def approve_recipe(recipe_id: int, body: PasswordIn, session: SessionDep, actor: Quality) -> CycleRecipe:
    """Approve a draft version with the quality engineer's signature."""
    return service.approve_recipe(session, actor=actor, recipe_id=recipe_id, password=body.password)


@router.post("/cycles", response_model=CycleOut, status_code=201)
def start_cycle(body: CycleStartIn, session: SessionDep, actor: Performer) -> CycleOut:
    """Record the start of a cycle on a load of devices."""
    return cycle_view(session, service.start_cycle(session, actor=actor, **body.model_dump()))


@router.get("/cycles", response_model=list[CycleOut])
def list_cycles(session: SessionDep, actor: Reader, machine_id: str | None = None, device_code: str | None = None,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[CycleOut]:
    """Cycles, newest first, by machine and/or device code."""
    return cycle_views(session, service.list_cycles(session, machine_id=machine_id, device_code=device_code,
                                                    limit=limit))


@router.get("/cycles/{cycle_id}", response_model=CycleOut)
def get_cycle(cycle_id: int, session: SessionDep, actor: Reader) -> CycleOut:
    """One cycle with its verdict."""
    return cycle_view(session, service.get_cycle(session, cycle_id=cycle_id))


@router.post("/cycles/{cycle_id}/complete", response_model=CycleOut)
def complete_cycle(cycle_id: int, body: CycleCompleteIn, session: SessionDep, actor: Performer,
                   influx: Influx) -> CycleOut:
    """Complete a cycle: evaluate it from InfluxDB, sign it, raise nonconformities when it failed."""
    c = service.complete_cycle(session, actor=actor, influx=influx, cycle_id=cycle_id, password=body.password,
                               ended_at=body.ended_at, residue_results=body.residue_results)
    return cycle_view(session, c)


@router.post("/devices/{device_code}/manual-steps", response_model=ManualStepOut, status_code=201)
def record_manual_step(device_code: str, body: ManualStepIn, session: SessionDep, actor: Performer) -> ManualStepOut:
    """Record a manual post-processing step or inspection with its results and signature."""
    s = service.record_manual_step(session, actor=actor, device_code=device_code, kind=body.kind,
                                   description=body.description, measurements=body.measurements,
                                   photos=body.photos, password=body.password)
    return step_view(session, s)


@router.get("/devices/{device_code}/manual-steps", response_model=list[ManualStepOut])
def list_manual_steps(device_code: str, session: SessionDep, actor: Reader) -> list[ManualStepOut]:
    """A device's manual steps in time order."""
    return manual_steps_of(session, device_code=device_code)
