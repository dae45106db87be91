"""HTTP endpoints for label data, delivery lists (JSON and PDF), their dispatch and the clinician's acceptance."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from server.auth.deps import require
from server.db import SessionDep
from server.delivery import service
from server.delivery.pdf import render_delivery_list_pdf
from server.delivery.schemas import AcceptIn, DispatchIn, Label, ReadyDevice, ShipmentCreate, ShipmentOut
from server.errors import COMMON_ERRORS
from server.models import utcnow
from server.security import Principal

router = APIRouter(tags=["delivery"], responses=COMMON_ERRORS)
Reader = Annotated[Principal, Depends(require("production_manager", "quality_engineer", "clinician"))]
Production = Annotated[Principal, Depends(require("production_manager"))]
Clinician = Annotated[Principal, Depends(require("clinician"))]


@router.get("/devices/{device_code}/label", response_model=Label)
def label(device_code: str, session: SessionDep, actor: Reader) -> dict:
    """The device's label data and what is still missing (the read is audited: it shows the pseudonym)."""
    return service.read_label(session, actor=actor, device_code=device_code)


@router.get("/delivery/ready", response_model=list[ReadyDevice])
def ready(session: SessionDep, actor: Production) -> list[dict]:
    """Released devices waiting for a delivery list, soonest surgery first."""
    return service.ready(session)


@router.post("/shipments", response_model=ShipmentOut, status_code=201)
def create(body: ShipmentCreate, session: SessionDep, actor: Production) -> dict:
    """Put released devices on a delivery list for their clinician."""
    return service.view(session, service.create(session, actor=actor, **body.model_dump()))


@router.get("/shipments", response_model=list[ShipmentOut])
def listing(session: SessionDep, actor: Reader,
            state: Literal["open", "dispatched", "accepted"] | None = None) -> list[dict]:
    """Delivery lists, newest first; a clinician sees those addressed to them (the read is audited)."""
    return [service.view(session, s) for s in service.listing(session, actor=actor, state=state)]


@router.get("/shipments/{shipment_id}", response_model=ShipmentOut)
def read(shipment_id: int, session: SessionDep, actor: Reader) -> dict:
    """One delivery list (the read is audited)."""
    return service.view(session, service.read(session, actor=actor, shipment_id=shipment_id))


@router.post("/shipments/{shipment_id}/dispatch", response_model=ShipmentOut)
def dispatch(shipment_id: int, body: DispatchIn, session: SessionDep, actor: Production) -> dict:
    """Dispatch the list: each device's delivery signed as performed, labels frozen, the clinician notified."""
    return service.view(session, service.dispatch(session, actor=actor, shipment_id=shipment_id,
                                                  password=body.password))


@router.post("/shipments/{shipment_id}/acceptance", response_model=ShipmentOut)
def accept(shipment_id: int, body: AcceptIn, session: SessionDep, actor: Clinician) -> dict:
    """The case's clinician (or delegate) signs for the devices on the list as received and accepted."""
    return service.view(session, service.accept(session, actor=actor, shipment_id=shipment_id,
                                                **body.model_dump()))


@router.get("/shipments/{shipment_id}/delivery-list.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}, "description": "The delivery list as PDF"}})
def delivery_list_pdf(shipment_id: int, session: SessionDep, actor: Reader) -> Response:
    """The delivery list to print and send with the devices: label data, UDI barcodes (GS1-128), signatures."""
    shipment = service.view(session, service.read(session, actor=actor, shipment_id=shipment_id))
    shipment["printed_at"] = utcnow()
    return Response(render_delivery_list_pdf(shipment), media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="delivery-list-{shipment_id}.pdf"'})
