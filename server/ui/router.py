"""JSON endpoints the kiosk and the dashboard pages call (HTTP only; the rules are in server/ui/service.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile

from server.auth.deps import require
from server.gate import service as gate
from server.gate.schemas import PresenceOut
from server.db import SessionDep
from server.errors import COMMON_ERRORS, error_responses
from server.nonconformities.service import KINDS
from server.live.state import snapshot as live_snapshot
from server.security import DISPLAY_ROLE, Principal
from server.ui import service
from server.ui.schemas import (ApprovalRow, CompleteWithPinIn, DashboardOverview, KioskView, NonconformityReported,
                               RecipeRow, RequalificationView, ScopeRecords, StartOut, StepView)

router = APIRouter(tags=["kiosk and dashboards"], responses=COMMON_ERRORS)
KioskReader = Annotated[Principal, Depends(require("operator", "production_manager", "quality_engineer", kiosk=True))]
Operator = Annotated[Principal, Depends(require("operator", kiosk=True))]
Manager = Annotated[Principal, Depends(require("production_manager", "quality_engineer", "admin"))]
DesignReviewer = Annotated[Principal, Depends(require("design_engineer", "clinician", "quality_engineer"))]
DashboardReader = Annotated[Principal, Depends(require("production_manager", "quality_engineer", "admin",
                                                      DISPLAY_ROLE))]
Quality = Annotated[Principal, Depends(require("quality_engineer"))]
QualificationReader = Annotated[Principal, Depends(require("quality_engineer", "production_manager"))]


@router.get("/kiosk/lookup", response_model=KioskView, responses=error_responses(404, 409))
def lookup(session: SessionDep, actor: KioskReader,
           code: Annotated[str, Query(max_length=200, description="Device code, GS1 UDI or JOB-<n>")]) -> KioskView:
    """Machine, job, devices, build-file checks and the release gate's verdict for a scanned code."""
    return service.kiosk_view(session, actor=actor, code=code, live=live_snapshot(session))


@router.post("/kiosk/jobs/{job_id}/start-request", response_model=StartOut, responses=error_responses(404, 409))
def start_request(job_id: int, session: SessionDep, actor: Operator) -> StartOut:
    """Ask the release gate to start the job (recorded); when cleared, the build step of each device starts."""
    return service.request_start(session, actor=actor, job_id=job_id)


@router.post("/kiosk/jobs/{job_id}/presence", response_model=PresenceOut, status_code=201,
             responses=error_responses(404))
def identify(job_id: int, session: SessionDep, actor: Operator) -> PresenceOut:
    """I am at this job's machine (the kiosk says so when an operator scans the job): lets the edge agent name me in
    the job's gate request for a while."""
    p = gate.identify_operator(session, actor=actor, job_id=job_id)
    minutes = session.info["settings"].operator_presence_minutes
    return PresenceOut(job_id=p.job_id, machine_id=p.machine_id, operator_id=p.user_id, at=p.at,
                       valid_until=p.at + timedelta(minutes=minutes))


@router.post("/kiosk/steps/{step_id}/start", response_model=StepView, responses=error_responses(404, 409))
def start_step(step_id: int, session: SessionDep, actor: Operator) -> StepView:
    """Start a post-processing, cleaning or sterilization step (in order)."""
    return service.start_step(session, actor=actor, step_id=step_id)


@router.post("/kiosk/steps/{step_id}/complete", response_model=StepView, responses=error_responses(404, 409))
def complete_step(step_id: int, body: CompleteWithPinIn, session: SessionDep, actor: Operator) -> StepView:
    """Record a step's result and sign it as performed with the operator's PIN."""
    return service.complete_step_with_pin(session, actor=actor, step_id=step_id, result=body.result, pin=body.pin)


@router.post("/kiosk/nonconformities", response_model=NonconformityReported, status_code=201,
             responses=error_responses(404, 409))
def report_nonconformity(session: SessionDep, actor: Operator,
                               code: Annotated[str, Form(min_length=1, max_length=200,
                                                         description="Scanned device or job code")],
                               kind: Annotated[str, Form(min_length=1, max_length=64,
                                                         description=f"One of {', '.join(KINDS)}")],
                               description: Annotated[str, Form(min_length=3, max_length=2000)],
                               # Optional by its default, not by "| None": a null in the schema is a multipart
                               # field of text "null" to a client (Schemathesis sent one), not an absent file.
                               photo: Annotated[UploadFile, File(description="JPEG/PNG/WebP, optional")] = None
                               ) -> NonconformityReported:
    """Report a nonconformity on the scanned device or job, with an optional photo; it blocks the device."""
    # A plain def runs in the worker pool, so the database work does not hold up the event loop.
    # One byte past the limit is enough to refuse it; the rest of an oversized upload is never read into memory.
    data = photo.file.read(session.info["settings"].max_photo_bytes + 1) if photo is not None else None
    return service.report_nonconformity(session, actor=actor, code=code, kind=kind, description=description,
                                        photo=data or None, photo_type=photo.content_type if photo else None)


@router.get("/dashboard/overview", response_model=DashboardOverview)
def dashboard(session: SessionDep, actor: DashboardReader,
              at_risk_hours: Annotated[int, Query(ge=1, le=24 * 14, description="Deadline horizon")] = 24
              ) -> DashboardOverview:
    """Every machine (live and qualification state), open jobs, deadlines at risk and open nonconformities."""
    return service.overview(session, live=live_snapshot(session), at_risk_hours=at_risk_hours)


@router.get("/design-approvals", response_model=list[ApprovalRow])
def design_approvals(session: SessionDep, actor: DesignReviewer,
                     limit: Annotated[int, Query(ge=1, le=200, description="Rows per status")] = 50
                     ) -> list[ApprovalRow]:
    """Design iterations awaiting approval, then the newest approved, with files, hashes and signatures."""
    return service.design_approvals(session, limit=limit)


@router.get("/qualification-records/scopes", response_model=list[ScopeRecords])
def qualification_scopes(session: SessionDep, actor: QualificationReader) -> list[ScopeRecords]:
    """Every qualification scope with its (re)qualification records."""
    return service.qualification_scopes(session)


@router.get("/qualification-records/{requalification_id}", response_model=RequalificationView,
            responses=error_responses(404))
def requalification_view(requalification_id: int, session: SessionDep,
                         actor: QualificationReader) -> RequalificationView:
    """A (re)qualification record with scope, triggers, what blocks approval and the approval signature."""
    return service.requalification_view(session, requalification_id=requalification_id)


@router.get("/recipe-approvals", response_model=list[RecipeRow])
def recipe_approvals(session: SessionDep, actor: Quality) -> list[RecipeRow]:
    """Every version of the validated cycle recipes with its approval signature."""
    return service.recipe_rows(session)


@router.get("/nonconformities/{nonconformity_id}/photo", response_class=Response, responses={
    **error_responses(404, 409), 200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}},
                                       "description": "The photo as it was recorded"}})
def nonconformity_photo(nonconformity_id: int, session: SessionDep, actor: Manager) -> Response:
    """A nonconformity's photo, only with a token (never a public static path), checked against its SHA-256."""
    data, kind = service.nonconformity_photo(session, actor=actor, nonconformity_id=nonconformity_id)
    return Response(content=data, media_type=kind, headers={"Cache-Control": "no-store",
                                                            "X-Content-Type-Options": "nosniff"})
