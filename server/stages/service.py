"""Stage gates per device: build → post-processing → cleaning → sterilization → inspection → release → delivery."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher, settings_of
from server.auth.esign import sign
from server.competence import require_authorised
from server.delivery import rules as delivery
from server.designs.service import case_deadline
from server.errors import Conflict, Forbidden
from server.materials.service import lot_problems, status_problems
from server.models import Case, Device, ImpactAssessment, Job, MaterialLot, Notification, Shipment, StageStep, utcnow
from server.notifications.service import notify, users_with_roles
from server.nonconformities.service import blocking, rework_pending, scope_of
from server.stages import evidence, release_hooks
from server.security import Principal, content_sha256
from server.db import get_or_not_found

STAGES = ("build", "post_processing", "cleaning", "sterilization", "inspection", "release", "delivery")
PERFORMERS = {"build": ("operator",), "post_processing": ("operator",), "cleaning": ("operator",),
              "sterilization": ("operator",), "inspection": ("quality_engineer",),
              "release": ("quality_engineer",), "delivery": ("production_manager",)}
# The downstream judge of each step (domain §2.5); release is a QA act, delivery is accepted by the clinician.
ACCEPTORS = {"build": ("production_manager", "quality_engineer"),
             "post_processing": ("production_manager", "quality_engineer"),
             "cleaning": ("production_manager", "quality_engineer"),
             "sterilization": ("quality_engineer",), "inspection": ("quality_engineer",),
             "release": ("quality_engineer",), "delivery": ("clinician",)}


def words(stage: str) -> str:
    """Stage name for people."""
    return stage.replace("_", "-")


def create_steps(session: Session, *, device: Device) -> list[StageStep]:
    """Create the device's stage steps with deadlines (cumulative, never later than the case deadline)."""
    settings = settings_of(session)
    case = session.get(Case, device.case_id)
    limit = case_deadline(session, case)
    at = utcnow()
    steps = []
    for i, stage in enumerate(STAGES):
        at = at + timedelta(hours=settings.stage_hours.get(stage, 24))
        step = StageStep(device_id=device.id, stage=stage, position=i, state="pending", deadline=min(at, limit))
        session.add(step)
        steps.append(step)
    session.flush()
    return steps


def get_step(session: Session, *, step_id: int) -> StageStep:
    """The stage step with this id, or NotFound."""
    return get_or_not_found(session, StageStep, step_id, f"No stage step {step_id}", code="step_not_found")


def steps_of(session: Session, *, device_id: int) -> list[StageStep]:
    """A device's steps in order."""
    return list(session.scalars(select(StageStep).where(StageStep.device_id == device_id)
                                .order_by(StageStep.position)))


def _refuse(step: StageStep, device: Device, verb: str, why: str) -> Conflict:
    return Conflict(f"Cannot {verb} {words(step.stage)} of device {device.device_code}: {why}",
                    code="stage_refused")


def _check_device_free(session: Session, step: StageStep, device: Device, verb: str) -> None:
    if device.state == "scrapped":
        raise _refuse(step, device, verb, "the device is scrapped")
    open_ncs = blocking(session, device=device)
    if open_ncs:
        raise _refuse(step, device, verb, "open nonconformity " + ", ".join(
            f"{nc.id} ({nc.kind.replace('_', ' ')}"
            + ("" if (w := scope_of(nc)) == "this job" else f", on {w}") + ")" for nc in open_ncs)
            + " must be dispositioned first")
    pending = rework_pending(session, device=device)
    if pending:
        raise _refuse(step, device, verb, "; ".join(pending))


def _check_evidence(session: Session, step: StageStep, device: Device, verb: str) -> None:
    """Refuse a cycle stage's completion/acceptance, or any release step, without the route's cycle verdicts."""
    stages = None if step.stage == "release" else [step.stage]
    if step.stage != "release" and step.stage not in settings_of(session).route_for(
            session.get(Job, device.job_id).product_family):
        return
    reasons = evidence.missing(session, device=device, stages=stages)
    if reasons:
        raise Conflict(f"Cannot {verb} {words(step.stage)} of device {device.device_code}: "
                       + "; ".join(reasons), code="cycle_evidence_missing")


def _check_competence(session: Session, actor: Principal, step: StageStep, device: Device, verb: str) -> None:
    """The build is performed on the job's machine: its performer must be authorised there (R14). The other
    machine steps are cycles, checked where they are started and completed (cycles service)."""
    if step.stage == "build":
        machine_id = session.get(Job, device.job_id).machine_id
        require_authorised(session, actor=actor, machine_id=machine_id,
                           doing=f"{verb} the build of device {device.device_code}")


def _check_lot(session: Session, step: StageStep, device: Device) -> None:
    """Every stage start re-checks the device's material lot (R15): quarantined or never released stops it;
    the build also needs it unexpired and within its reuse limit, as the release gate did."""
    job = session.get(Job, device.job_id)
    lot = session.get(MaterialLot, job.material_lot_id)
    problems = (lot_problems(lot, today=utcnow().date()) if step.stage == "build" else status_problems(lot))
    if problems:
        raise _refuse(step, device, "start", "; ".join(problems))


def start(session: Session, *, actor: Principal, step_id: int, on_list: int | None = None) -> StageStep:
    """Start a step; only after the previous step was accepted, never out of order.

    on_list: the delivery list being dispatched (a delivery is started only that way)."""
    step = get_step(session, step_id=step_id)
    device = session.get(Device, step.device_id)
    if actor.role not in PERFORMERS[step.stage]:
        raise Forbidden(f"A {actor.role} may not perform {words(step.stage)}; allowed: "
                        f"{', '.join(PERFORMERS[step.stage])}", code="role_not_allowed")
    if step.state != "pending":
        raise _refuse(step, device, "start", f"it is already {step.state.replace('_', ' ')}")
    if step.position > 0:
        prev = steps_of(session, device_id=device.id)[step.position - 1]
        if prev.state != "accepted":
            raise Conflict(f"Cannot start {words(step.stage)} of device {device.device_code}: "
                           f"{words(prev.stage)} has not been accepted (it is {prev.state.replace('_', ' ')})",
                           code="stage_out_of_order")
    else:
        job = session.get(Job, device.job_id)
        if job.state != "released":
            raise Conflict(f"Cannot start build of device {device.device_code}: the release gate has not "
                           f"allowed job {job.id}", code="stage_out_of_order")
    _check_device_free(session, step, device, "start")
    _check_competence(session, actor, step, device, "start")
    _check_lot(session, step, device)
    if step.stage == "delivery":
        delivery.check_delivery(session, actor=actor, device=device, verb="start", on_list_id=on_list)
    if step.stage == "release":
        _check_evidence(session, step, device, "start")
    step.state, step.started_at, step.started_by = "in_progress", utcnow(), actor.id
    record(session, actor=actor, action="stage_started", record_type="device", record_id=device.device_code,
           old={"stage": step.stage, "state": "pending"}, new={"stage": step.stage, "state": "in_progress"})
    return step


def completion_content(step: StageStep, device: Device, result: str, by: int) -> dict[str, Any]:
    """What the performer's signature binds to."""
    return {"step_id": step.id, "device_code": device.device_code, "stage": step.stage, "result": result,
            "performed_by": by}


def acceptance_content(step: StageStep, device: Device, judgement: str,
                       shipment: Shipment | None = None) -> dict[str, Any]:
    """What the acceptor's signature binds to (includes the signed completion; for a delivery, the delivery list
    as dispatched)."""
    content = {"step_id": step.id, "device_code": device.device_code, "stage": step.stage, "result": step.result,
               "completion_signature_id": step.completion_signature_id, "judgement": judgement,
               "impact_assessment": step.impact_assessment}
    if shipment is not None:
        content["delivery_list"] = {"id": shipment.id, "sha256": shipment.list_sha256}
    return content


@register_record_hasher("stage_completion")
def _rehash_completion(session: Session, record_id: str) -> str | None:
    step = session.get(StageStep, int(record_id))
    if step is None or step.result is None:
        return None
    return content_sha256(completion_content(step, session.get(Device, step.device_id), step.result,
                                             step.completed_by))


@register_record_hasher("stage_acceptance")
def _rehash_acceptance(session: Session, record_id: str) -> str | None:
    step = session.get(StageStep, int(record_id))
    if step is None or step.judgement is None:
        return None
    device = session.get(Device, step.device_id)
    shipment = delivery.on_list(session, device) if step.stage == "delivery" else None
    return content_sha256(acceptance_content(step, device, step.judgement, shipment))


def complete(session: Session, *, actor: Principal, step_id: int, result: str, password: str,
             credential: str = "password", on_list: int | None = None) -> StageStep:
    """Complete a step with the performer's signature (meaning performed; password, or PIN at the kiosk).

    on_list: the delivery list being dispatched (a delivery is performed only that way)."""
    step = get_step(session, step_id=step_id)
    device = session.get(Device, step.device_id)
    if step.state != "in_progress":
        raise _refuse(step, device, "complete", f"it is {step.state.replace('_', ' ')}, not in progress")
    if actor.id != step.started_by:
        raise _refuse(step, device, "complete", "only the person who started it can sign it as performed")
    _check_device_free(session, step, device, "complete")
    _check_competence(session, actor, step, device, "complete")
    _check_evidence(session, step, device, "complete")
    if step.stage == "delivery":
        delivery.check_delivery(session, actor=actor, device=device, verb="complete", on_list_id=on_list)
    sig = sign(session, signer=actor, password=password, meaning="performed", record_type="stage_completion",
               record_id=step.id, record_sha256=content_sha256(completion_content(step, device, result, actor.id)),
               allowed_roles=PERFORMERS[step.stage], credential=credential)
    step.state, step.completed_at, step.completed_by = "completed", utcnow(), actor.id
    step.result, step.completion_signature_id = result, sig.id
    record(session, actor=actor, action="stage_completed", record_type="device", record_id=device.device_code,
           old={"stage": step.stage, "state": "in_progress"},
           new={"stage": step.stage, "state": "completed", "result": result, "signature_id": sig.id})
    return step


def read_release_series(session: Session, *, actor: Principal, step_id: int, password: str) -> Any:
    """Before accepting a release: read the device's time series for its seal, in a read transaction.

    A full-rate build takes tens of seconds to read from InfluxDB; in accept()'s write transaction that
    would hold SQLite's one write lock (and every gate decision) for as long. Returns what each release
    subscriber prepared (release_hooks.prepare), or None when accept() will refuse anyway (not a completed
    release step, already sealed, wrong password: no point reading).
    """
    from server.db import begin_read, end_read_transaction
    from server.models import DeviceSeal, User
    from server.security import password_matches

    begin_read(session)
    try:
        step = session.get(StageStep, step_id)
        if step is None or step.stage != "release" or step.state != "completed":
            return None
        device = session.get(Device, step.device_id)
        if evidence.missing(session, device=device):
            return None  # accept() refuses for want of cycle evidence
        user = session.get(User, actor.id) if actor.kind == "user" else None
        if (user is None or session.scalar(select(DeviceSeal.id).where(DeviceSeal.device_id == device.id))
                or not password_matches(settings_of(session), user.password_hash, password)):
            return None  # accept() refuses, and records a refused signature, without the wait
        return release_hooks.prepare(session, device)
    finally:
        end_read_transaction(session)
        # accept() must see the rows as they are in its own transaction, not as read here.
        session.expire_all()


def accept(session: Session, *, actor: Principal, step_id: int, judgement: str, password: str,
           series: Any = None) -> StageStep:
    """Accept a completed step: a named second person signs the judgement; an overdue step needs an impact assessment.

    series: for a release, what read_release_series prepared before this transaction (prepared here otherwise).
    """
    step = get_step(session, step_id=step_id)
    device = session.get(Device, step.device_id)
    if actor.role not in ACCEPTORS[step.stage]:
        raise Forbidden(f"A {actor.role} may not accept {words(step.stage)}; allowed: "
                        f"{', '.join(ACCEPTORS[step.stage])}", code="role_not_allowed")
    if step.state != "completed":
        raise _refuse(step, device, "accept", f"it is {step.state.replace('_', ' ')}, not completed")
    if actor.id == step.completed_by:
        raise _refuse(step, device, "accept", "the person who performed a step cannot accept it")
    now = utcnow()
    if now > step.deadline and not step.impact_assessment:
        raise _refuse(step, device, "accept", f"it is overdue since {step.deadline:%d %b %Y %H:%M} UTC; "
                                              f"record an impact assessment first")
    _check_device_free(session, step, device, "accept")
    _check_evidence(session, step, device, "accept")
    shipment = None
    if step.stage == "delivery":
        shipment = delivery.check_delivery(session, actor=actor, device=device, verb="accept", on_list_id=None)
    sig = sign(session, signer=actor, password=password,
               meaning="approved" if step.stage == "release" else "reviewed", record_type="stage_acceptance",
               record_id=step.id, record_sha256=content_sha256(acceptance_content(step, device, judgement, shipment)),
               allowed_roles=ACCEPTORS[step.stage])
    step.state, step.accepted_at, step.accepted_by = "accepted", now, actor.id
    step.judgement, step.acceptance_signature_id = judgement, sig.id
    record(session, actor=actor, action="stage_accepted", record_type="device", record_id=device.device_code,
           old={"stage": step.stage, "state": "completed"},
           new={"stage": step.stage, "state": "accepted", "judgement": judgement, "signature_id": sig.id})
    if step.stage == "delivery":
        device.state = "delivered"
        delivery.after_acceptance(session, actor=actor, shipment=shipment)
    if step.stage == "release":
        # Announced to the subscribers: the device history record seals itself (server/history/seal.py).
        release_hooks.accepted(session, actor=actor, device=device, prepared=series)
    return step


def assessment_content(a: ImpactAssessment, step: StageStep, device: Device) -> dict[str, Any]:
    """What the assessor's signature binds to."""
    return {"id": a.id, "step_id": step.id, "device_code": device.device_code, "stage": step.stage,
            "assessment": a.assessment, "assessed_by": a.assessed_by}


@register_record_hasher("impact_assessment")
def _rehash_assessment(session: Session, record_id: str) -> str | None:
    a = session.get(ImpactAssessment, int(record_id))
    if a is None:
        return None
    step = session.get(StageStep, a.step_id)
    return content_sha256(assessment_content(a, step, session.get(Device, step.device_id)))


def assess_impact(session: Session, *, actor: Principal, step_id: int, assessment: str, password: str) -> StageStep:
    """Record an impact assessment of an overdue step, signed; earlier ones stay (append-only), the step shows
    the latest, and its acceptance binds that one."""
    step = get_step(session, step_id=step_id)
    device = session.get(Device, step.device_id)
    if step.state == "accepted":
        raise _refuse(step, device, "assess", "it is already accepted")
    if utcnow() <= step.deadline:
        raise _refuse(step, device, "assess", f"it is not overdue (deadline {step.deadline:%d %b %Y %H:%M} UTC)")
    a = ImpactAssessment(step_id=step.id, assessment=assessment, assessed_by=actor.id, assessed_at=utcnow())
    session.add(a)
    session.flush()
    sig = sign(session, signer=actor, password=password, meaning="reviewed", record_type="impact_assessment",
               record_id=a.id, record_sha256=content_sha256(assessment_content(a, step, device)),
               allowed_roles=("production_manager", "quality_engineer"))
    a.signature_id = sig.id
    old = step.impact_assessment
    step.impact_assessment, step.impact_assessed_by, step.impact_assessed_at = assessment, actor.id, a.assessed_at
    record(session, actor=actor, action="impact_assessed", record_type="device", record_id=device.device_code,
           old={"stage": step.stage, "impact_assessment": old},
           new={"stage": step.stage, "impact_assessment": assessment, "assessment_id": a.id, "signature_id": sig.id})
    return step


def assessments_of(session: Session, *, step_id: int) -> list[ImpactAssessment]:
    """Every impact assessment of a step, oldest first."""
    get_step(session, step_id=step_id)
    return list(session.scalars(select(ImpactAssessment).where(ImpactAssessment.step_id == step_id)
                                .order_by(ImpactAssessment.id)))


def notify_overdue(session: Session, *, now: datetime) -> int:
    """Notify production of each step that became overdue, once per step (R9: overdue work is raised, not only
    shown when someone looks); the number of steps notified."""
    told = set(session.scalars(select(Notification.record_id).where(Notification.kind == "step_overdue")))
    roles = ("production_manager", "quality_engineer")
    n = 0
    for step in overdue(session, now=now):
        if str(step.id) in told:
            continue
        device = session.get(Device, step.device_id)
        notify(session, user_ids=users_with_roles(session, roles), kind="step_overdue", record_type="stage_step",
               record_id=step.id, message=f"{words(step.stage).capitalize()} of device {device.device_code} is overdue "
                                          f"since {step.deadline:%d %b %Y %H:%M} UTC: an impact assessment is needed")
        # The notification's record id is the step: marked here so one check never tells a step twice.
        told.add(str(step.id))
        n += 1
    return n


def overdue(session: Session, *, now: datetime) -> list[StageStep]:
    """Steps not yet accepted whose deadline has passed (devices not scrapped)."""
    return list(session.scalars(select(StageStep).join(Device, Device.id == StageStep.device_id).where(
        StageStep.state != "accepted", StageStep.deadline < now, Device.state != "scrapped")
        .order_by(StageStep.deadline)))
