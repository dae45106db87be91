"""HTTP endpoints for cases, designs, iterations (file upload) and their approvals."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from server.audit.schemas import SignatureOut
from server.auth.deps import require
from server.db import SessionDep
from server.designs import service
from server.designs.schemas import (CaseCreate, CaseOut, DelegateIn, DesignCreate, DesignOut, ImagingDateIn,
                                    IterationOut, IterationSignIn, SurgeryDateIn, TeamMemberIn)
from server.errors import COMMON_ERRORS, TooLarge
from server.limits import TEXT_MAX
from server.models import Design, Signature
from server.security import Principal

router = APIRouter(tags=["cases and designs"], responses=COMMON_ERRORS)
CaseOpener = Annotated[Principal, Depends(require("clinician", "design_engineer"))]
Clinician = Annotated[Principal, Depends(require("clinician"))]
SurgeryDater = Annotated[Principal, Depends(require("clinician", "production_manager"))]
CaseReader = Annotated[Principal, Depends(require("clinician", "design_engineer", "quality_engineer",
                                                  "production_manager"))]
Designer = Annotated[Principal, Depends(require("design_engineer"))]
Approver = Annotated[Principal, Depends(require("design_engineer", "clinician"))]
DesignReader = Annotated[Principal, Depends(require("clinician", "design_engineer", "quality_engineer",
                                                    "production_manager", "operator"))]


def _iteration_out(session, it) -> IterationOut:
    out = IterationOut.model_validate(it)
    out.signatures = [SignatureOut.model_validate(s) for s in service.iteration_signatures(session,
                                                                                            iteration_id=it.id)]
    return out


@router.post("/cases", response_model=CaseOut, status_code=201)
def create_case(body: CaseCreate, session: SessionDep, actor: CaseOpener) -> dict:
    """Open a case for its clinician (a user)."""
    return service.case_view(session, service.create_case(session, actor=actor, **body.model_dump()))


@router.post("/cases/{case_id}/surgery-date", response_model=CaseOut)
def change_surgery_date(case_id: int, body: SurgeryDateIn, session: SessionDep, actor: SurgeryDater) -> dict:
    """Move a case's surgery date with the reason, signed; the open steps' deadlines follow."""
    return service.case_view(session, service.change_surgery_date(session, actor=actor, case_id=case_id,
                                                                  **body.model_dump()))


@router.post("/cases/{case_id}/delegate", response_model=CaseOut)
def set_delegate(case_id: int, body: DelegateIn, session: SessionDep, actor: Clinician) -> dict:
    """The case's clinician names another clinician to act for them (approve, accept delivery), or withdraws it."""
    return service.case_view(session, service.set_delegate(session, actor=actor, case_id=case_id,
                                                           delegate_username=body.delegate_username))


@router.post("/cases/{case_id}/imaging-date", response_model=CaseOut)
def set_imaging_date(case_id: int, body: ImagingDateIn, session: SessionDep, actor: CaseOpener) -> dict:
    """Record when the patient was imaged (label data)."""
    return service.case_view(session, service.set_imaging_date(session, actor=actor, case_id=case_id,
                                                                imaging_date=body.imaging_date))


@router.get("/cases/{case_id}", response_model=CaseOut)
def read_case(case_id: int, session: SessionDep, actor: CaseReader) -> dict:
    """Read a case (the read is audited); a clinician reads only their own cases."""
    return service.case_view(session, service.read_case(session, actor=actor, case_id=case_id))


@router.post("/cases/{case_id}/designs", response_model=DesignOut, status_code=201)
def create_design(case_id: int, body: DesignCreate, session: SessionDep, actor: Designer) -> Design:
    """Create a design for the case."""
    return service.create_design(session, actor=actor, case_id=case_id, **body.model_dump())


@router.post("/designs/{design_id}/team", response_model=list[str])
def add_to_team(design_id: int, body: TeamMemberIn, session: SessionDep, actor: Designer) -> list[str]:
    """Name another design engineer to the design's team (someone on it does): they may add iterations too."""
    return service.add_to_team(session, actor=actor, design_id=design_id, username=body.username)


@router.get("/designs/{design_id}", response_model=DesignOut)
def get_design(design_id: int, session: SessionDep, actor: DesignReader) -> Design:
    """One design."""
    return service.get_design(session, design_id=design_id)


@router.post("/designs/{design_id}/iterations", response_model=IterationOut, status_code=201)
def add_iteration(design_id: int, session: SessionDep, actor: Designer,
                  files: Annotated[list[UploadFile], File(description="Design and build files")],
                  software_name: Annotated[str, Form(min_length=1, max_length=200, description="Design software used")],
                  software_version: Annotated[str, Form(min_length=1, max_length=100, description="Its version")],
                  change_note: Annotated[str, Form(max_length=TEXT_MAX, description="What changed and why")
                                         ] = "initial design"
                  ) -> IterationOut:
    """Upload a new iteration; the server hashes every file (SHA-256, same code as the edge)."""
    with tempfile.TemporaryDirectory(prefix="amtrace-upload-") as tmp:
        staged = []
        for i, f in enumerate(files):
            path = Path(tmp) / str(i)
            limit = session.info["settings"].max_design_file_bytes
            with open(path, "wb") as out:
                size = 0
                while chunk := f.file.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(f"File {Path(f.filename or '').name or i} is larger than the limit of "
                                       f"{limit / 1024 / 1024:g} MiB (AMTRACE_MAX_DESIGN_FILE_BYTES)",
                                       code="file_too_large")
                    out.write(chunk)
            staged.append((Path(f.filename or f"file-{i}").name, path))
        it = service.add_iteration(session, actor=actor, design_id=design_id, software_name=software_name,
                                   software_version=software_version, change_note=change_note, files=staged)
    return _iteration_out(session, it)


@router.get("/designs/iterations/{iteration_id}", response_model=IterationOut)
def get_iteration(iteration_id: int, session: SessionDep, actor: DesignReader) -> IterationOut:
    """One iteration with its files and signatures."""
    return _iteration_out(session, service.get_iteration(session, iteration_id=iteration_id))


@router.post("/designs/iterations/{iteration_id}/signatures", response_model=SignatureOut, status_code=201)
def sign_iteration(iteration_id: int, body: IterationSignIn, session: SessionDep, actor: Approver) -> Signature:
    """Approve the iteration: design engineer and clinician each sign, bound to its hash."""
    return service.sign_iteration(session, actor=actor, iteration_id=iteration_id, password=body.password)
