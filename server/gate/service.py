"""The release gate: may this build file be built on this machine for this job, now? Every reason, recorded."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, seal_is_intact
from server.auth.service import is_authorised_on
from server.designs.service import iteration_content, iteration_signatures
from server.errors import Forbidden
from server.materials.service import lot_problems
from server.models import (Case, Design, DesignIteration, GateDecision, Job, Machine, MaterialLot,
                           QualificationScope, User, utcnow)
from server.nonconformities.service import open_for_job
from server.qualification import service as qualification
from server.security import Principal, content_sha256
from server.stages.service import case_deadline


def _day(d: date | datetime) -> str:
    return f"{d.day} {d:%b}"


def _full(d: date | datetime) -> str:
    return f"{d.day} {d:%b %Y}"


class Reasons:
    """Collects refusal reasons as {code, message}."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, code: str, message: str) -> None:
        """Add one reason."""
        self.items.append({"code": code, "message": message})


def decide(session: Session, *, actor: Principal, machine_id: str, job_id: int, build_file_sha256: str,
           operator_id: int | None) -> GateDecision:
    """Decide whether the build may start; refuse with every reason that applies and record the decision."""
    if actor.kind == "agent" and machine_id not in actor.machine_ids:
        raise Forbidden(f"Agent {actor.name} is not scoped to machine {machine_id}", code="agent_scope")
    if actor.kind == "user" and actor.role == "operator":
        if operator_id is not None and operator_id != actor.id:
            raise Forbidden("An operator can ask the release gate only for themself", code="operator_mismatch")
        operator_id = actor.id
    now = utcnow()
    today = now.date()
    sha = build_file_sha256.lower()
    reasons = Reasons()
    inputs: dict[str, Any] = {"at": now.isoformat(), "machine_id": machine_id, "job_id": job_id,
                              "build_file_sha256": sha, "operator_id": operator_id}
    machine = session.get(Machine, machine_id)
    job = session.get(Job, job_id)
    if machine is None:
        reasons.add("machine_unknown", f"Machine {machine_id} is not registered")
    if job is None:
        reasons.add("job_unknown", f"Job {job_id} does not exist")
    if machine is not None and job is not None:
        if job.machine_id != machine.id:
            reasons.add("job_not_for_machine", f"Job {job.id} is planned for machine {job.machine_id}, "
                                               f"not {machine.id}")
        elif job.state == "closed":
            reasons.add("job_closed", f"Job {job.id} is already closed")
        else:
            _check_machine(session, reasons, inputs, machine, job, today)
            _check_designs(session, reasons, inputs, job, sha)
            _check_material(session, reasons, inputs, job, today)
            _check_cases(session, reasons, inputs, job, now)
            for nc in open_for_job(session, job_id=job.id):
                reasons.add("open_nonconformity", f"Open nonconformity {nc.id} ({nc.kind.replace('_', ' ')}) on "
                                                  f"this job must be dispositioned first: {nc.description}")
        _check_operator(session, reasons, inputs, machine, operator_id, today)
    allowed = not reasons.items
    decision = GateDecision(machine_id=machine_id, job_id=job_id, build_file_sha256=sha, operator_id=operator_id,
                            requested_by=actor.actor, allowed=allowed, reasons=reasons.items, inputs=inputs,
                            decided_at=now)
    session.add(decision)
    session.flush()
    record(session, actor=actor, action="gate_decision", record_type="job", record_id=job_id,
           new={"decision_id": decision.id, "allowed": allowed, "machine_id": machine_id,
                "build_file_sha256": sha, "operator_id": operator_id,
                "reasons": [r["code"] for r in reasons.items]})
    if allowed and job.state == "planned":
        job.state = "released"
        record(session, actor=actor, action="job_released", record_type="job", record_id=job.id,
               old={"state": "planned"}, new={"state": "released"}, reason=f"gate decision {decision.id}")
    return decision


def _check_machine(session: Session, reasons: Reasons, inputs: dict, machine: Machine, job: Job,
                   today: date) -> None:
    qualification.apply_time_triggers(session, today=today, machine_id=machine.id)
    scope = session.scalar(select(QualificationScope).where(
        QualificationScope.machine_id == machine.id, QualificationScope.process == job.process,
        QualificationScope.material == job.material, QualificationScope.product_family == job.product_family))
    what = f"{job.process} / {job.material} / {job.product_family}"
    inputs["machine"] = {"software": machine.software_revision, "firmware": machine.firmware_revision,
                         "build_prep_software": machine.build_prep_software,
                         "calibration_due": str(machine.calibration_due), "maintenance_due": str(machine.maintenance_due)}
    if scope is None or scope.state == "unqualified":
        reasons.add("machine_not_qualified", f"Machine {machine.id} is not qualified for {what}")
        inputs["scope"] = None if scope is None else {"id": scope.id, "state": scope.state}
    else:
        inputs["scope"] = {"id": scope.id, "state": scope.state, "valid_until": str(scope.valid_until),
                           "qualified_software": scope.qualified_software_revision}
        if scope.state in ("requalification_required", "requalifying"):
            triggers = qualification.open_triggers(session, scope=scope)
            because = "; ".join(f"{t.detail} on {_day(t.occurred_at)}" for t in reversed(triggers)) or \
                scope.state_reason or "requalification pending"
            prefix = "requires requalification" if scope.state == "requalification_required" else \
                "is being requalified"
            reasons.add("machine_not_qualified", f"Machine {prefix}: {because}")
        elif scope.state == "suspended":
            reasons.add("machine_not_qualified", f"Machine {machine.id} is suspended for {what}: "
                                                 f"{scope.state_reason}")
        if scope.valid_until is not None and scope.valid_until < today:
            reasons.add("qualification_expired", f"Qualification of machine {machine.id} for {what} expired on "
                                                 f"{_full(scope.valid_until)}")
    if machine.calibration_due is None or machine.calibration_due < today:
        due = _full(machine.calibration_due) if machine.calibration_due else "never recorded"
        reasons.add("calibration_overdue", f"Machine calibration is out of date (due {due})")
    if machine.maintenance_due is None or machine.maintenance_due < today:
        due = _full(machine.maintenance_due) if machine.maintenance_due else "never recorded"
        reasons.add("maintenance_overdue", f"Preventive maintenance of the machine is overdue (due {due})")


def _check_designs(session: Session, reasons: Reasons, inputs: dict, job: Job, sha: str) -> None:
    approved_hashes: set[str] = set()
    snapshot = []
    for it_id in sorted({d.design_iteration_id for d in job.devices if d.kind == "device"}):
        it = session.get(DesignIteration, it_id)
        design = session.get(Design, it.design_id)
        name = f"Design '{design.name}' iteration {it.number}"
        sigs = iteration_signatures(session, iteration_id=it.id)
        roles = {s.signer_role for s in sigs}
        snapshot.append({"iteration_id": it.id, "status": it.status, "content_sha256": it.content_sha256,
                         "signatures": [s.id for s in sigs], "files": [f.sha256 for f in it.files]})
        if it.status == "superseded":
            newer = session.scalar(select(DesignIteration.number).where(DesignIteration.design_id == design.id)
                                   .order_by(DesignIteration.number.desc()).limit(1))
            reasons.add("design_superseded", f"{name} was superseded by iteration {newer}; the job must use "
                                             f"the approved latest iteration")
            continue
        missing = [label for role, label in (("design_engineer", "design engineer"), ("clinician", "clinician"))
                   if role not in roles]
        if missing:
            reasons.add("design_not_approved", f"{name} is not approved: {' and '.join(missing)} "
                                               f"signature missing")
            continue
        current = content_sha256(iteration_content(design, it))
        # The content hash was recomputed just above; each seal check is one HMAC, no query.
        broken = [s for s in sigs if s.record_sha256 != current or not seal_is_intact(session, s)]
        if broken:
            reasons.add("design_changed_after_signing", f"{name} no longer matches what was signed; "
                                                        f"it needs a new iteration and new signatures")
            continue
        approved_hashes.update(f.sha256 for f in it.files)
    inputs["design_iterations"] = snapshot
    if sha not in approved_hashes:
        reasons.add("build_file_not_approved", f"Build file (SHA-256 {sha[:12]}…) does not match any approved "
                                               f"file of job {job.id}")


def _check_material(session: Session, reasons: Reasons, inputs: dict, job: Job, today: date) -> None:
    lot = session.get(MaterialLot, job.material_lot_id)
    inputs["material_lot"] = {"id": lot.id, "lot_number": lot.lot_number, "status": lot.status,
                              "reuse_count": lot.reuse_count, "reuse_limit": lot.reuse_limit}
    for problem in lot_problems(lot, today=today):
        reasons.add("material_lot_invalid", problem[0].upper() + problem[1:])


def _check_cases(session: Session, reasons: Reasons, inputs: dict, job: Job, now: datetime) -> None:
    snapshot = []
    for case_id in sorted({d.case_id for d in job.devices if d.case_id is not None}):
        case = session.get(Case, case_id)
        deadline = case_deadline(session, case)
        snapshot.append({"case_id": case.id, "deadline": deadline.isoformat()})
        if now >= deadline:
            reasons.add("case_deadline_passed", f"Case {case.patient_ref}: delivery deadline {_full(deadline)} has "
                                                f"passed (surgery on {_full(case.surgery_date)})")
    inputs["cases"] = snapshot


def _check_operator(session: Session, reasons: Reasons, inputs: dict, machine: Machine | None,
                    operator_id: int | None, today: date) -> None:
    if operator_id is None:
        reasons.add("operator_unknown", "No operator was named for this build")
        return
    user = session.get(User, operator_id)
    inputs["operator"] = None if user is None else {"id": user.id, "username": user.username, "role": user.role}
    if user is None or not user.active:
        reasons.add("operator_unknown", f"Operator {operator_id} is not an active user")
    elif user.role != "operator":
        reasons.add("operator_not_authorised", f"{user.full_name} is a {user.role.replace('_', ' ')}, "
                                               f"not an operator")
    elif machine is not None and not is_authorised_on(session, user_id=user.id, machine_id=machine.id, on=today):
        reasons.add("operator_not_authorised", f"Operator {user.full_name} is not authorised on machine "
                                               f"{machine.id}")
