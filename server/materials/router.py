"""HTTP endpoints for material lots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from server.auth.deps import ANY_PERSON, require
from server.db import SessionDep
from server.errors import COMMON_ERRORS
from server.materials import service
from server.materials.schemas import LotCreate, LotOut, LotStatusIn
from server.models import MaterialLot
from server.security import Principal

router = APIRouter(prefix="/materials", tags=["materials"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require(*ANY_PERSON))]
Stores = Annotated[Principal, Depends(require("production_manager", "quality_engineer"))]
Quality = Annotated[Principal, Depends(require("quality_engineer"))]


@router.post("/lots", response_model=LotOut, status_code=201)
def register(body: LotCreate, session: SessionDep, actor: Stores) -> MaterialLot:
    """Register a lot with its certificate; it is incoming until a quality engineer releases it."""
    return service.register_lot(session, actor=actor, **body.model_dump())


@router.get("/lots", response_model=list[LotOut])
def list_lots(session: SessionDep, actor: Reader) -> list[MaterialLot]:
    """All lots."""
    return service.list_lots(session)


@router.get("/lots/{lot_id}", response_model=LotOut)
def get(lot_id: int, session: SessionDep, actor: Reader) -> MaterialLot:
    """One lot."""
    return service.get_lot(session, lot_id=lot_id)


@router.post("/lots/{lot_id}/status", response_model=LotOut)
def set_status(lot_id: int, body: LotStatusIn, session: SessionDep, actor: Quality) -> MaterialLot:
    """Quarantine a lot, or release it after incoming inspection (quality engineer; releasing is signed)."""
    return service.set_status(session, actor=actor, lot_id=lot_id, **body.model_dump())
