"""HTTP endpoints for jobs, devices and UDI parsing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.auth.deps import ANY_PERSON, require
from server.db import SessionDep
from server.errors import COMMON_ERRORS, Conflict, error_responses
from server.jobs import service, udi
from server.jobs.schemas import CloseIn, DeviceOut, JobCreate, JobOut, UdiIn, UdiOut
from server.models import Device, Job
from server.security import Principal

router = APIRouter(tags=["jobs and devices"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require(*ANY_PERSON))]
Planner = Annotated[Principal, Depends(require("production_manager"))]
Closer = Annotated[Principal, Depends(require("production_manager", "operator"))]


@router.post("/jobs", response_model=JobOut, status_code=201)
def create_job(body: JobCreate, session: SessionDep, actor: Planner) -> Job:
    """Plan a job; each device gets its unique device code (and UDI when its design has a GTIN)."""
    data = body.model_dump()
    return service.create_job(session, actor=actor, machine_id=data["machine_id"],
                              material_lot_id=data["material_lot_id"], devices=data["devices"],
                              coupons=data["coupons"], build_parameters=data["build_parameters"])


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: int, session: SessionDep, actor: Reader) -> Job:
    """One job with its devices."""
    return service.get_job(session, job_id=job_id)


@router.post("/jobs/{job_id}/close", response_model=JobOut)
def close_job(job_id: int, body: CloseIn, session: SessionDep, actor: Closer) -> Job:
    """Close a built job (counts one use of its material lot)."""
    return service.close_job(session, actor=actor, job_id=job_id, reason=body.reason)


@router.get("/devices/{device_code}", response_model=DeviceOut)
def get_device(device_code: str, session: SessionDep, actor: Reader) -> Device:
    """A device by its device code."""
    return service.get_device(session, device_code=device_code)


@router.post("/udi/parse", response_model=UdiOut, responses=error_responses(409))
def parse_udi(body: UdiIn, actor: Reader) -> UdiOut:
    """Parse and validate a UDI (check digit, dates, field lengths, character set)."""
    try:
        u = udi.parse(body.udi)
    except udi.UdiError as e:
        raise Conflict(f"Not a valid UDI: {e}", code="udi_invalid") from e
    return UdiOut(gtin=u.gtin, production_date=u.production_date, expiry_date=u.expiry_date, lot=u.lot,
                  serial=u.serial, human_readable=u.human_readable(), element_string=u.element_string())
