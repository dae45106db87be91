"""The rules behind the kiosk and the dashboards: find a job by what was scanned, ask the release gate for a
verdict, start and sign steps at the kiosk (PIN), report nonconformities, and summarise the floor."""

from __future__ import annotations

import hashlib
import re
from datetime import date, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.images import TYPES, check_photo
from server.audit.service import record, settings_of
from server.errors import Conflict, NotFound
from server.gate import service as gate
from server.live.schemas import LiveMachine
from server.cycles import service as cycles
from server.designs import service as designs
from server.models import (BuildFileCheck, Design, DesignIteration, Device, Job, Machine, Nonconformity,
                           QualificationScope, Requalification, Signature, StageStep, User,
                           utcnow)
from server.nonconformities.service import blocking, photo_path, raise_nonconformity
from server.qualification import service as qualification
from server.qualification.schemas import RequalificationOut
from server.security import Principal
from server.stages import service as stages
from server.ui.schemas import (ApprovalRow, AtRiskRow, BuildFileCheckView, DashboardOverview, DeviceView, FileRow,
                               JobRow, JobView, KioskView, MachineRow, MachineView, NonconformityReported,
                               NonconformityRow, RecipeRow, RequalificationLink, RequalificationView,
                               ScopeRecords, ScopeView, SignatureView, StartOut, StepView, TriggerView, Verdict,
                               VerdictReason)

JOB_CODE = re.compile(r"^(?:JOB-?)?(\d{1,9})$", re.IGNORECASE)
PHOTO_TYPES = TYPES
STAGE_LABELS = {"build": "Build", "post_processing": "Post-processing", "cleaning": "Cleaning",
                "sterilization": "Sterilization", "inspection": "Inspection", "release": "Release",
                "delivery": "Delivery"}


def job_label(job_id: int) -> str:
    """The job code people read and scan: JOB-<id>."""
    return f"JOB-{job_id}"


# --- the kiosk -------------------------------------------------------------------------------------

def find_by_code(session: Session, *, code: str) -> tuple[Job, Device | None]:
    """The job (and device) a scanned or typed code stands for: device code, GS1 UDI, or JOB-<n>."""
    text = code.strip()
    if not text:
        raise Conflict("Scan or type a job or device code", code="code_empty")
    device = session.scalar(select(Device).where(
        (Device.device_code == text) | (Device.udi_hri == text) | (Device.udi_element_string == text)))
    if device is not None:
        return session.get(Job, device.job_id), device
    m = JOB_CODE.fullmatch(text)
    if m:
        job = session.get(Job, int(m.group(1)))
        if job is not None:
            return job, None
    raise NotFound(f"No job or device has the code {text}. Check the label and scan again.", code="code_unknown")


def _latest_checks(session: Session, job: Job) -> list[BuildFileCheck]:
    latest: dict[str, BuildFileCheck] = {}
    for c in session.scalars(select(BuildFileCheck).where(BuildFileCheck.job_id == job.id)
                             .order_by(BuildFileCheck.id)):
        latest[c.file_name] = c
    return sorted(latest.values(), key=lambda c: c.file_name)


def _verdict_sha(checks: list[BuildFileCheck]) -> str | None:
    # The file the machine received is what the agent hashed; the newest check is the file loaded now.
    return max(checks, key=lambda c: c.id).sha256 if checks else None


NOT_CHECKED = VerdictReason(code="build_file_not_checked",
                            message="The build file has not been checked yet: load it on the machine so the "
                                    "agent can compare it with the approved design")


def preview_verdict(session: Session, *, actor: Principal, job: Job) -> Verdict:
    """Ask the release gate what it would decide now, without recording or releasing anything."""
    sha = _verdict_sha(_latest_checks(session, job))
    operator_id = actor.id if actor.role == "operator" else None
    # The gate's own checks on the gate's own snapshot, read only: the operator sees what the gate would say,
    # and only a start request leaves a decision (and a release) in the records.
    found = gate.preview(session, machine_id=job.machine_id, job_id=job.id, build_file_sha256=sha or "0" * 64,
                         operator_id=operator_id, operator_asks=operator_id is not None)
    if found is None:
        # An expiry has to be recorded before the gate can say what follows from it (the scopes move): decide
        # inside a savepoint and roll it back.
        savepoint = session.begin_nested()
        try:
            found = gate.decide(session, actor=actor, machine_id=job.machine_id, job_id=job.id,
                                build_file_sha256=sha or "0" * 64, operator_id=operator_id).reasons
        finally:
            savepoint.rollback()
    reasons = [VerdictReason(**r) for r in found if not (sha is None and r["code"] == "build_file_not_approved")]
    if actor.role != "operator":
        # A manager looking at the kiosk is not the operator; the operator check applies at start.
        reasons = [r for r in reasons if r.code not in ("operator_unknown", "operator_not_authorised")]
    if sha is None:
        reasons.append(NOT_CHECKED)
    return Verdict(cleared=not reasons, reasons=reasons, build_file_sha256=sha)


def _step_view(step: StageStep, steps: list[StageStep], actor: Principal, now: datetime) -> StepView:
    prev_ok = step.position == 0 or steps[step.position - 1].state == "accepted"
    return StepView(id=step.id, stage=step.stage, label=STAGE_LABELS[step.stage], state=step.state,
                    deadline=step.deadline, overdue=step.state != "accepted" and now > step.deadline,
                    result=step.result, startable=step.state == "pending" and prev_ok and step.position > 0,
                    signable=step.state == "in_progress" and step.started_by == actor.id)


def _nc_words(nc: Nonconformity) -> str:
    return f"Nonconformity {nc.id} ({nc.kind.replace('_', ' ')}): {nc.description}"


def device_view(session: Session, *, actor: Principal, device: Device, now: datetime) -> DeviceView:
    """A device with its steps and what blocks it."""
    steps = stages.steps_of(session, device_id=device.id) if device.kind == "device" else []
    current = next((s for s in steps if s.state != "accepted"), None)
    return DeviceView(device_code=device.device_code, kind=device.kind, udi_hri=device.udi_hri, state=device.state,
                      current_stage=STAGE_LABELS[current.stage] if current else None,
                      steps=[_step_view(s, steps, actor, now) for s in steps],
                      open_nonconformities=[_nc_words(nc) for nc in blocking(session, device=device)])


def kiosk_view(session: Session, *, actor: Principal, code: str, live: dict[str, LiveMachine]) -> KioskView:
    """What the operator sees for a scanned code: machine, job, devices, build-file checks and the verdict."""
    job, device = find_by_code(session, code=code)
    machine = session.get(Machine, job.machine_id)
    now = utcnow()
    devices = [device] if device is not None else list(job.devices)
    checks = _latest_checks(session, job)
    return KioskView(
        scanned=code.strip(),
        machine=MachineView(id=machine.id, manufacturer=machine.manufacturer, model=machine.model, site=machine.site,
                            room=machine.room, software_revision=machine.software_revision,
                            live=live.get(machine.id)),
        job=JobView(id=job.id, label=job_label(job.id), state=job.state, process=job.process, material=job.material,
                    product_family=job.product_family),
        devices=[device_view(session, actor=actor, device=d, now=now) for d in devices],
        build_file_checks=[BuildFileCheckView(file_name=c.file_name, sha256=c.sha256, identical=c.passed,
                                              detail=c.detail, checked_at=c.checked_at) for c in checks],
        verdict=preview_verdict(session, actor=actor, job=job))


def request_start(session: Session, *, actor: Principal, job_id: int) -> StartOut:
    """Ask the release gate for real (recorded); when allowed, start the build step of each device of the job."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"No job {job_label(job_id)}", code="job_not_found")
    sha = _verdict_sha(_latest_checks(session, job))
    if sha is None:
        return StartOut(verdict=Verdict(cleared=False, reasons=[NOT_CHECKED], build_file_sha256=None),
                        started_devices=[])
    decision = gate.decide(session, actor=actor, machine_id=job.machine_id, job_id=job.id, build_file_sha256=sha,
                           operator_id=actor.id)
    verdict = Verdict(cleared=decision.allowed, reasons=[VerdictReason(**r) for r in decision.reasons],
                      build_file_sha256=sha, recorded_decision_id=decision.id)
    started = []
    if decision.allowed:
        for device in job.devices:
            if device.kind != "device":
                continue
            build = stages.steps_of(session, device_id=device.id)[0]
            if build.state == "pending":
                stages.start(session, actor=actor, step_id=build.id)
                started.append(device.device_code)
    return StartOut(verdict=verdict, started_devices=started)


def start_step(session: Session, *, actor: Principal, step_id: int) -> StepView:
    """Start a step by the stage-gate rules (in order, by a performer, device not blocked)."""
    step = stages.start(session, actor=actor, step_id=step_id)
    steps = stages.steps_of(session, device_id=step.device_id)
    return _step_view(step, steps, actor, utcnow())


def complete_step_with_pin(session: Session, *, actor: Principal, step_id: int, result: str, pin: str) -> StepView:
    """Complete a step signed as performed, re-authenticated by the operator's PIN (P11 §11.200(a)(1)(i)).

    The stage gate's own rules and signing path; only the credential differs from
    POST /stages/steps/{id}/complete, which re-authenticates with the password."""
    step = stages.complete(session, actor=actor, step_id=step_id, result=result, password=pin, credential="pin")
    return _step_view(step, stages.steps_of(session, device_id=step.device_id), actor, utcnow())


def report_nonconformity(session: Session, *, actor: Principal, code: str, kind: str, description: str,
                         photo: bytes | None, photo_type: str | None) -> NonconformityReported:
    """Record a nonconformity on the scanned device (or job) with an optional photo kept by its SHA-256."""
    job, device = find_by_code(session, code=code)
    details: dict = {}
    if photo:
        photo_type = check_photo(photo, declared=photo_type, max_bytes=settings_of(session).max_photo_bytes)
        sha = hashlib.sha256(photo).hexdigest()
        path = photo_path(session, sha, photo_type)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(photo)
        details = {"photo_sha256": sha, "photo_type": photo_type, "photo_bytes": len(photo)}
    nc = raise_nonconformity(session, actor=actor, kind=kind, description=description,
                             job_id=job.id, device_code=device.device_code if device else None, details=details)
    return NonconformityReported(id=nc.id, kind=nc.kind, description=nc.description,
                                 device_code=device.device_code if device else None, job_id=job.id,
                                 photo_sha256=details.get("photo_sha256"))


# --- the production manager's dashboard --------------------------------------------------------------

def _scope_view(scope: QualificationScope, today: date) -> ScopeView:
    return ScopeView(id=scope.id, label=f"{scope.process} / {scope.material} / {scope.product_family}",
                     state=scope.state, state_reason=scope.state_reason, valid_until=scope.valid_until,
                     expires_in_days=(scope.valid_until - today).days if scope.valid_until else None)


def _stage_summary(session: Session, job: Job) -> str:
    counts: dict[str, int] = {}
    for d in job.devices:
        if d.kind != "device":
            continue
        current = next((s for s in stages.steps_of(session, device_id=d.id) if s.state != "accepted"), None)
        key = "done" if current is None else f"{STAGE_LABELS[current.stage].lower()} {current.state.replace('_', ' ')}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} × {k}" for k, n in sorted(counts.items())) or "no devices"


def overview(session: Session, *, live: dict[str, LiveMachine], at_risk_hours: int) -> DashboardOverview:
    """Machines with live and qualification state, open jobs, deadlines at risk (most urgent first), open NCs."""
    now = utcnow()
    today = now.date()
    open_ncs = list(session.scalars(select(Nonconformity).where(Nonconformity.state == "open")
                                    .order_by(Nonconformity.id.desc())))
    machines = []
    for m in session.scalars(select(Machine).order_by(Machine.id)):
        scopes = session.scalars(select(QualificationScope).where(QualificationScope.machine_id == m.id)
                                 .order_by(QualificationScope.id))
        machines.append(MachineRow(id=m.id, name=f"{m.manufacturer} {m.model}", software_revision=m.software_revision,
                                   calibration_due=m.calibration_due, maintenance_due=m.maintenance_due,
                                   scopes=[_scope_view(s, today) for s in scopes], live=live.get(m.id),
                                   open_nonconformities=sum(1 for nc in open_ncs if nc.machine_id == m.id)))
    jobs = [JobRow(id=j.id, label=job_label(j.id), machine_id=j.machine_id, state=j.state,
                   devices=sum(1 for d in j.devices if d.kind == "device"), stage_summary=_stage_summary(session, j))
            for j in session.scalars(select(Job).where(Job.state != "closed").order_by(Job.id))]
    horizon = now + timedelta(hours=at_risk_hours)
    at_risk = []
    rows = session.execute(select(StageStep, Device.device_code).join(Device, Device.id == StageStep.device_id)
                           .where(StageStep.state != "accepted", StageStep.deadline <= horizon,
                                  Device.state == "in_production").order_by(StageStep.deadline))
    for step, code in rows:
        at_risk.append(AtRiskRow(device_code=code, what=STAGE_LABELS[step.stage], state=step.state,
                                 deadline=step.deadline, overdue=step.deadline < now,
                                 hours_left=round((step.deadline - now).total_seconds() / 3600, 1)))
    codes = {d.id: d.device_code for d in session.scalars(
        select(Device).where(Device.id.in_([nc.device_id for nc in open_ncs if nc.device_id])))}
    return DashboardOverview(
        machines=machines, jobs=jobs, at_risk=at_risk,
        nonconformities=[NonconformityRow(id=nc.id, kind=nc.kind, description=nc.description, machine_id=nc.machine_id,
                                          job_id=nc.job_id, device_code=codes.get(nc.device_id),
                                          raised_by=nc.raised_by, raised_at=nc.raised_at,
                                          photo_sha256=(nc.details or {}).get("photo_sha256")) for nc in open_ncs],
        generated_at=now)


# --- quality engineering: design approval, (re)qualification records, recipe approval ----------------

def _signature_view(sig: Signature) -> SignatureView:
    return SignatureView(id=sig.id, printed_name=sig.printed_name, signer_role=sig.signer_role, meaning=sig.meaning,
                         signed_at=sig.signed_at, record_sha256=sig.record_sha256)


def _signatures(session: Session, record_type: str, record_ids: list) -> dict[str, list[Signature]]:
    out: dict[str, list[Signature]] = {}
    if not record_ids:
        return out
    for sig in session.scalars(select(Signature).where(Signature.record_type == record_type,
                                                       Signature.record_id.in_([str(i) for i in record_ids]))
                               .order_by(Signature.id)):
        out.setdefault(sig.record_id, []).append(sig)
    return out


def design_approvals(session: Session, *, limit: int) -> list[ApprovalRow]:
    """Iterations awaiting approval, then the newest approved ones; superseded iterations are left out."""
    rows = []
    for status in ("draft", "approved"):
        q = (select(DesignIteration, Design).join(Design, Design.id == DesignIteration.design_id)
             .where(DesignIteration.status == status).order_by(DesignIteration.id.desc()).limit(limit))
        rows += list(session.execute(q))
    sigs = _signatures(session, "design_iteration", [it.id for it, _ in rows])
    out = []
    for it, design in rows:
        signed = sigs.get(str(it.id), [])
        have = {s.signer_role for s in signed}
        out.append(ApprovalRow(
            iteration_id=it.id, number=it.number, design_id=design.id, design_name=design.name,
            case_id=design.case_id, product_family=design.product_family,
            regulatory_category=design.regulatory_category, software=f"{it.software_name} {it.software_version}",
            change_note=it.change_note, content_sha256=it.content_sha256, status=it.status, created_at=it.created_at,
            files=[FileRow(file_name=f.file_name, sha256=f.sha256, size_bytes=f.size_bytes) for f in it.files],
            signatures=[_signature_view(s) for s in signed],
            awaiting=[r for r in designs.APPROVER_ROLES if r not in have]))
    return out


def _scope_records(session: Session, scope: QualificationScope) -> ScopeRecords:
    reqs = session.scalars(select(Requalification).where(Requalification.scope_id == scope.id)
                           .order_by(Requalification.id.desc()))
    return ScopeRecords(id=scope.id, machine_id=scope.machine_id,
                        label=f"{scope.process} / {scope.material} / {scope.product_family}", state=scope.state,
                        state_reason=scope.state_reason, valid_until=scope.valid_until,
                        records=[RequalificationLink(id=r.id, kind=r.kind, state=r.state, started_at=r.started_at)
                                 for r in reqs])


def qualification_scopes(session: Session) -> list[ScopeRecords]:
    """Every scope with its (re)qualification records, by machine."""
    scopes = session.scalars(select(QualificationScope).order_by(QualificationScope.machine_id,
                                                                 QualificationScope.id))
    return [_scope_records(session, s) for s in scopes]


def requalification_view(session: Session, *, requalification_id: int) -> RequalificationView:
    """A (re)qualification record with its scope, triggers, what blocks approval, and the approval signature."""
    req = qualification.get_requalification(session, requalification_id=requalification_id)
    scope = qualification.get_scope(session, scope_id=req.scope_id)
    triggers = qualification.record_triggers(session, req)
    names = {u.id: u.full_name for u in session.scalars(
        select(User).where(User.id.in_([i for i in (req.started_by, req.criteria_locked_by) if i])))}
    sig = session.get(Signature, req.approval_signature_id) if req.approval_signature_id else None
    # The same list approve() refuses with, so the page says beforehand what the server would say.
    blockers = [] if req.state in ("approved", "rejected") else qualification.approval_blockers(req)
    return RequalificationView(
        record=RequalificationOut.model_validate(req), scope=_scope_records(session, scope),
        triggers=[TriggerView(id=t.id, kind=t.kind, source=t.source, detail=t.detail, occurred_at=t.occurred_at)
                  for t in triggers],
        started_by=names.get(req.started_by, f"user {req.started_by}"),
        criteria_locked_by=names.get(req.criteria_locked_by) if req.criteria_locked_by else None,
        blockers=blockers, approval=_signature_view(sig) if sig else None)


def recipe_rows(session: Session) -> list[RecipeRow]:
    """Every recipe version (newest first within each name) with its approval signature."""
    recipes = cycles.list_recipes(session)
    sigs = {s.id: s for s in session.scalars(select(Signature).where(
        Signature.id.in_([r.approval_signature_id for r in recipes if r.approval_signature_id])))}
    return [RecipeRow(id=r.id, name=r.name, version=r.version, process=r.process, parameters=r.parameters,
                      content_sha256=r.content_sha256, state=r.state, created_at=r.created_at,
                      approval=_signature_view(sigs[r.approval_signature_id]) if r.approval_signature_id else None)
            for r in recipes]


def nonconformity_photo(session: Session, *, actor: Principal, nonconformity_id: int) -> tuple[bytes, str]:
    """A nonconformity's photo, checked against the SHA-256 recorded with it; every read is audited."""
    nc = session.get(Nonconformity, nonconformity_id)
    if nc is None:
        raise NotFound(f"No nonconformity {nonconformity_id}", code="nonconformity_not_found")
    sha, kind = (nc.details or {}).get("photo_sha256"), (nc.details or {}).get("photo_type")
    if not sha or kind not in PHOTO_TYPES:
        raise NotFound(f"Nonconformity {nc.id} has no photo", code="photo_not_found")
    path = photo_path(session, sha, kind)
    if not path.is_file():
        raise NotFound(f"The photo of nonconformity {nc.id} is missing from the file store", code="photo_missing")
    data = path.read_bytes()
    # Stored by hash: a file that no longer hashes to its name was changed after it was recorded.
    if hashlib.sha256(data).hexdigest() != sha:
        raise Conflict(f"The photo of nonconformity {nc.id} changed after it was recorded", code="photo_changed")
    record(session, actor=actor, action="nonconformity_photo_read", record_type="nonconformity", record_id=nc.id,
           new={"photo_sha256": sha})
    return data, kind
