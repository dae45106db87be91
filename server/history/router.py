"""HTTP endpoints for build history queries, per-build signal summaries and device history records."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel

from server.audit.service import record
from server.auth.deps import require
from server.cycles.router import Influx
from server.db import SessionDep, begin_read, end_read_transaction
from server.designs.service import require_case_clinician
from server.errors import COMMON_ERRORS, ErrorBody, Forbidden
from server.history import dhr, seal, service, summaries
from server.history.schemas import BuildSummary, DeviceHistoryRecord, HistoryPage
from server.security import Principal

router = APIRouter(tags=["history"], responses={
    **COMMON_ERRORS, 503: {"model": ErrorBody, "description": "InfluxDB unavailable or refused the query"}})
HistoryReader = Annotated[object, Depends(require("quality_engineer", "production_manager"))]
Quality = Annotated[object, Depends(require("quality_engineer"))]
# The clinician reads the record of what they sign for (R17), and only that: checked per device below.
DhrReader = Annotated[Principal, Depends(require("quality_engineer", "production_manager", "clinician"))]


def _clinician_may_read(session, actor: Principal, device_code: str) -> None:
    if actor.role == "clinician":
        device = service.device_by_code(session, device_code)
        if device.case_id is None:
            raise Forbidden(f"{device_code} is a {device.kind}: a clinician reads the records of their cases' devices",
                            code="not_case_clinician")
        require_case_clinician(session, service.case_of(session, device), actor, "read its devices' records")


class SealCheckOut(BaseModel):
    """Result of re-checking a released device's seal."""

    device_code: str
    sealed: bool
    intact: bool
    points: int
    problems: list[str]
    notes: list[str] = []
    source: str = ""


@router.get("/history/builds", response_model=HistoryPage)
def builds(session: SessionDep, actor: HistoryReader, device_code: str | None = None, machine_id: str | None = None,
           material_lot: str | None = None, job: Annotated[str | None, Query(max_length=40, description=(
               "Job number, e.g. 12 or JOB-12"))] = None, design_iteration_id: int | None = None,
           since: AwareDatetime | None = None, until: AwareDatetime | None = None,
           status: Literal["released", "blocked", "nonconforming", "in_production", "delivered", "scrapped"] | None = None,
           sort: Literal["started", "-started", "device_code", "-device_code", "machine", "-machine"] = "-started",
           page: Annotated[int, Query(ge=1)] = 1,
           page_size: Annotated[int, Query(ge=1, le=500)] = 50) -> HistoryPage:
    """Build history by device code, machine and material lot (case-insensitive, from the start), job, design
    iteration, time range and status."""
    begin_read(session)
    return service.build_history(session, device_code=device_code, machine_id=machine_id, material_lot=material_lot,
                                 job=job,
                                 design_iteration_id=design_iteration_id, since=since, until=until, status=status,
                                 sort=sort, page=page, page_size=page_size)


@router.get("/history/devices/{device_code}/build", response_model=BuildSummary)
def build_summary(device_code: str, session: SessionDep, actor: HistoryReader, influx: Influx,
                  plots: bool = False) -> BuildSummary:
    """Each signal's min, max, mean and time outside limits, and every event, of the device's build (stored at
    release for a released device, else live: see `source`)."""
    begin_read(session)
    return summaries.summary_of(session, influx, device_code=device_code, plots=plots).build


@router.get("/history/devices/{device_code}/dhr", response_model=DeviceHistoryRecord)
def device_history_record(device_code: str, session: SessionDep, actor: DhrReader, influx: Influx,
                          plots: bool = True) -> DeviceHistoryRecord:
    """The device history record as JSON (schema version in schema_version); the read is audited. A clinician
    reads the records of their cases' devices."""
    begin_read(session)
    _clinician_may_read(session, actor, device_code)
    out = dhr.device_history_record(session, influx, actor=actor, device_code=device_code, plots=plots)
    end_read_transaction(session)
    record(session, actor=actor, action="dhr_read", record_type="device", record_id=device_code,
           new={"format": "json"})
    return out


@router.get("/history/devices/{device_code}/dhr.pdf", response_class=Response,
            responses={200: {"content": {"application/pdf": {}}, "description": "The DHR as PDF"}})
def device_history_record_pdf(device_code: str, session: SessionDep, actor: DhrReader, influx: Influx) -> Response:
    """The device history record as PDF for people (tables, plots with limits, signature manifestations)."""
    from server.history.pdf import render_dhr_pdf

    begin_read(session)
    _clinician_may_read(session, actor, device_code)
    data = dhr.device_history_record(session, influx, actor=actor, device_code=device_code, plots=True)
    end_read_transaction(session)
    pdf = render_dhr_pdf(data)
    record(session, actor=actor, action="dhr_read", record_type="device", record_id=device_code,
           new={"format": "pdf"})
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="DHR-{device_code}.pdf"'})


@router.get("/history/devices/{device_code}/seal", response_model=SealCheckOut)
def verify_seal(device_code: str, session: SessionDep, actor: Quality, influx: Influx) -> SealCheckOut:
    """Recompute the released device's digests; name every point changed, added or deleted since release."""
    begin_read(session)
    c = seal.verify_device(session, influx, device_code=device_code)
    return SealCheckOut(device_code=c.device_code, sealed=c.sealed, intact=c.ok, points=c.points, problems=c.problems,
                        notes=c.notes, source=c.source)


class ArchiveOut(BaseModel):
    """A released device's archive: where it is, whether every file matches, and its manifest."""

    device_code: str
    present: bool
    intact: bool
    archive_id: str | None
    location: str | None
    problems: list[str]
    manifest: dict | None


@router.get("/history/devices/{device_code}/archive", response_model=ArchiveOut)
def device_archive(device_code: str, session: SessionDep, actor: Quality) -> ArchiveOut:
    """The device's archive checked file by file (every SHA-256 against the manifest, the manifest against the audit
    chain), with its manifest."""
    from server.archive.reading import check

    begin_read(session)
    c = check(session, device=service.device_by_code(session, device_code))
    return ArchiveOut(device_code=device_code, present=c.present, intact=c.intact, archive_id=c.archive_id,
                      location=c.location, problems=c.problems, manifest=c.manifest)


@router.get("/history/devices/{device_code}/archive/files/{name:path}", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}}, "description": "The file's bytes"},
                       409: {"model": ErrorBody, "description": "The file does not match its manifest"}})
def device_archive_file(device_code: str, name: str, session: SessionDep, actor: Quality) -> Response:
    """One file of the device's archive, hash-checked before it is sent (the read is audited)."""
    from server.archive.reading import read_file

    begin_read(session)
    data = read_file(session, device=service.device_by_code(session, device_code), name=name)
    end_read_transaction(session)
    record(session, actor=actor, action="archive_read", record_type="device", record_id=device_code,
           new={"file": name})
    return Response(data, media_type="application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{device_code}-{name.replace("/", "-")}"'})
