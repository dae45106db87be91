"""Qualification per scope: the state machine, its triggers, and (re)qualification records."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher
from server.auth.esign import sign
from server.errors import Conflict, NotFound
from server.models import (Machine, QualificationScope, Requalification, RequalificationTrigger, TestArtefact,
                           utcnow)
from server.security import SYSTEM, Principal, content_sha256
from server.db import get_or_not_found

STATES = ("unqualified", "qualified", "requalification_required", "requalifying", "suspended")

# Every allowed transition and what causes it; anything else is refused with the reason.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("unqualified", "qualified"): "initial qualification approved",
    ("unqualified", "requalification_required"): "product family moved to this machine",
    ("qualified", "requalification_required"): "requalification trigger",
    ("requalification_required", "requalifying"): "requalification started",
    ("suspended", "requalifying"): "requalification started",
    ("requalifying", "qualified"): "requalification approved",
    ("unqualified", "suspended"): "suspended",
    ("qualified", "suspended"): "suspended",
    ("requalification_required", "suspended"): "suspended",
    ("requalifying", "suspended"): "suspended",
}

TRIGGER_KINDS = ("software_changed", "firmware_changed", "build_prep_software_changed", "relocated",
                 "maintenance", "calibration_expired", "qualification_expired", "material_changed",
                 "material_handling_changed", "product_family_moved", "process_excursion", "other")
ARTEFACT_TYPES = ("tensile_bar", "density_cube", "geometry_artefact", "surface_roughness", "other")
RISK_DECISIONS = ("full", "partial", "none")


def get_scope(session: Session, *, scope_id: int) -> QualificationScope:
    """The scope with this id, or NotFound."""
    return get_or_not_found(session, QualificationScope, scope_id, f"No qualification scope {scope_id}", code="scope_not_found")


def get_requalification(session: Session, *, requalification_id: int) -> Requalification:
    """The (re)qualification record with this id, or NotFound."""
    return get_or_not_found(session, Requalification, requalification_id, f"No requalification {requalification_id}", code="requalification_not_found")


def describe(scope: QualificationScope) -> str:
    """Scope in words: machine, process, material, product family."""
    return f"{scope.machine_id} / {scope.process} / {scope.material} / {scope.product_family}"


def transition(session: Session, *, actor: Principal, scope: QualificationScope, to: str, reason: str) -> None:
    """Move a scope to state `to`, refusing any transition not in TRANSITIONS."""
    if (scope.state, to) not in TRANSITIONS:
        allowed = sorted(t for (f, t) in TRANSITIONS if f == scope.state)
        raise Conflict(f"Scope {scope.id} ({describe(scope)}) cannot go from {scope.state} to {to}; "
                       f"from {scope.state} it can go to: {', '.join(allowed) or 'nothing'}",
                       code="qualification_transition_refused")
    old = scope.state
    scope.state, scope.state_reason, scope.updated_at = to, reason, utcnow()
    record(session, actor=actor, action="qualification_state_changed", record_type="qualification_scope",
           record_id=scope.id, old={"state": old}, new={"state": to}, reason=reason)


def create_scope(session: Session, *, actor: Principal, machine_id: str, process: str, material: str,
                 product_family: str) -> QualificationScope:
    """Declare a scope (machine × process × material × product family), unqualified."""
    if session.get(Machine, machine_id) is None:
        raise NotFound(f"No machine {machine_id}", code="machine_not_found")
    if _find_scope(session, machine_id, process, material, product_family) is not None:
        raise Conflict(f"Scope {machine_id} / {process} / {material} / {product_family} exists",
                       code="scope_exists")
    scope = QualificationScope(machine_id=machine_id, process=process, material=material,
                               product_family=product_family, state="unqualified")
    session.add(scope)
    session.flush()
    record(session, actor=actor, action="scope_created", record_type="qualification_scope", record_id=scope.id,
           new={"machine_id": machine_id, "process": process, "material": material,
                "product_family": product_family, "state": "unqualified"})
    return scope


def _find_scope(session: Session, machine_id: str, process: str, material: str,
                product_family: str) -> QualificationScope | None:
    return session.scalar(select(QualificationScope).where(
        QualificationScope.machine_id == machine_id, QualificationScope.process == process,
        QualificationScope.material == material, QualificationScope.product_family == product_family))


def _open_requalification(session: Session, scope_id: int) -> Requalification | None:
    return session.scalar(select(Requalification).where(
        Requalification.scope_id == scope_id, Requalification.state.in_(("open", "criteria_locked"))))


def raise_trigger(session: Session, *, actor: Principal, scope: QualificationScope, kind: str, detail: str,
                  old_value: str | None = None, new_value: str | None = None) -> RequalificationTrigger:
    """Record a trigger with its source; a qualified scope moves to requalification_required."""
    if kind not in TRIGGER_KINDS:
        raise Conflict(f"Unknown trigger kind {kind!r}; kinds are {', '.join(TRIGGER_KINDS)}",
                       code="unknown_trigger")
    trig = RequalificationTrigger(scope_id=scope.id, kind=kind, source=actor.actor, detail=detail,
                                  old_value=old_value, new_value=new_value, occurred_at=utcnow())
    open_req = _open_requalification(session, scope.id)
    if open_req is not None:
        # Arrives while a requalification runs: attached to it, so its approver sees and signs it.
        trig.requalification_id = open_req.id
    session.add(trig)
    session.flush()
    record(session, actor=actor, action="requalification_triggered", record_type="qualification_scope",
           record_id=scope.id, new={"trigger_id": trig.id, "kind": kind, "detail": detail,
                                    "old_value": old_value, "new_value": new_value, "source": actor.actor})
    if scope.state == "qualified":
        transition(session, actor=actor, scope=scope, to="requalification_required", reason=detail)
    return trig


def trigger_machine_scopes(session: Session, *, actor: Principal, machine_id: str, kind: str, detail: str,
                           old_value: str | None = None, new_value: str | None = None
                           ) -> list[RequalificationTrigger]:
    """Raise the same trigger on every scope of a machine that is or was qualified."""
    return [raise_trigger(session, actor=actor, scope=s, kind=kind, detail=detail, old_value=old_value,
                          new_value=new_value)
            for s in session.scalars(select(QualificationScope).where(QualificationScope.machine_id == machine_id)
                                     .order_by(QualificationScope.id))
            if s.state != "unqualified"]


def _already_triggered(session: Session, scope: QualificationScope, kind: str, new_value: str | None) -> bool:
    q = select(RequalificationTrigger.id).where(
        RequalificationTrigger.scope_id == scope.id, RequalificationTrigger.kind == kind,
        RequalificationTrigger.new_value == new_value)
    if scope.qualified_at is not None:
        q = q.where(RequalificationTrigger.occurred_at > scope.qualified_at)
    return session.scalar(q.limit(1)) is not None


def check_machine_against_baselines(session: Session, *, actor: Principal, machine: Machine) -> None:
    """Compare the machine's reported versions with each qualified baseline; trigger on a difference."""
    checks = (("software_changed", "software", "software_revision", "qualified_software_revision"),
              ("firmware_changed", "firmware", "firmware_revision", "qualified_firmware_revision"),
              ("build_prep_software_changed", "build-preparation software", "build_prep_software",
               "qualified_build_prep_software"))
    for scope in session.scalars(select(QualificationScope).where(QualificationScope.machine_id == machine.id)
                                 .order_by(QualificationScope.id)):
        if scope.qualified_at is None:
            continue
        for kind, words, current_attr, baseline_attr in checks:
            current, baseline = getattr(machine, current_attr), getattr(scope, baseline_attr)
            if current is None or baseline is None or current == baseline:
                continue
            if _already_triggered(session, scope, kind, current):
                continue
            raise_trigger(session, actor=actor, scope=scope, kind=kind,
                          detail=f"{words} changed from {baseline} to {current}", old_value=baseline,
                          new_value=current)


def apply_time_triggers(session: Session, *, today: date, machine_id: str | None = None,
                        actor: Principal = SYSTEM) -> list[RequalificationTrigger]:
    """Expired qualification or calibration moves qualified scopes to requalification_required."""
    q = select(QualificationScope).where(QualificationScope.state == "qualified")
    if machine_id is not None:
        q = q.where(QualificationScope.machine_id == machine_id)
    raised = []
    for scope in session.scalars(q.order_by(QualificationScope.id)).all():
        machine = session.get(Machine, scope.machine_id)
        if scope.valid_until is not None and scope.valid_until < today:
            raised.append(raise_trigger(session, actor=actor, scope=scope, kind="qualification_expired",
                                        detail=f"qualification expired on {scope.valid_until:%d %b %Y}",
                                        new_value=scope.valid_until.isoformat()))
        elif machine.calibration_due is not None and machine.calibration_due < today:
            raised.append(raise_trigger(session, actor=actor, scope=scope, kind="calibration_expired",
                                        detail=f"calibration was due on {machine.calibration_due:%d %b %Y}",
                                        new_value=machine.calibration_due.isoformat()))
    return raised


def ensure_scope_for_job(session: Session, *, actor: Principal, machine_id: str, process: str, material: str,
                         product_family: str) -> QualificationScope:
    """The scope a job needs; a product family qualified elsewhere but new here needs requalification."""
    scope = _find_scope(session, machine_id, process, material, product_family)
    if scope is not None and scope.state != "unqualified":
        return scope
    elsewhere = session.scalar(select(QualificationScope).where(
        QualificationScope.machine_id != machine_id, QualificationScope.process == process,
        QualificationScope.material == material, QualificationScope.product_family == product_family,
        QualificationScope.qualified_at.is_not(None)).limit(1))
    if scope is None:
        scope = create_scope(session, actor=actor, machine_id=machine_id, process=process, material=material,
                             product_family=product_family)
    if elsewhere is not None:
        detail = (f"product family {product_family} moved from machine {elsewhere.machine_id} to "
                  f"{machine_id}, where it was not qualified")
        raise_trigger(session, actor=actor, scope=scope, kind="product_family_moved", detail=detail,
                      old_value=elsewhere.machine_id, new_value=machine_id)
        transition(session, actor=actor, scope=scope, to="requalification_required", reason=detail)
    return scope


def open_triggers(session: Session, *, scope: QualificationScope) -> list[RequalificationTrigger]:
    """Triggers since the scope was last qualified, newest first."""
    q = select(RequalificationTrigger).where(RequalificationTrigger.scope_id == scope.id)
    if scope.qualified_at is not None:
        q = q.where(RequalificationTrigger.occurred_at > scope.qualified_at)
    return list(session.scalars(q.order_by(RequalificationTrigger.id.desc())))


def suspend(session: Session, *, actor: Principal, scope_id: int, reason: str) -> QualificationScope:
    """Suspend a scope (e.g. until a signed risk assessment after a major repair)."""
    scope = get_scope(session, scope_id=scope_id)
    transition(session, actor=actor, scope=scope, to="suspended", reason=reason)
    return scope


def start(session: Session, *, actor: Principal, scope_id: int, risk_decision: str, rationale: str,
          protocol: str, valid_until: date) -> Requalification:
    """Open a (re)qualification record with its risk decision; triggers so far are attached to it."""
    scope = get_scope(session, scope_id=scope_id)
    if risk_decision not in RISK_DECISIONS:
        raise Conflict(f"Risk decision must be one of {', '.join(RISK_DECISIONS)}", code="risk_decision")
    if _open_requalification(session, scope.id) is not None:
        raise Conflict(f"Scope {scope.id} already has an open requalification", code="requalification_open")
    if valid_until <= utcnow().date():
        raise Conflict("Validity end date must be in the future", code="validity_in_past")
    if scope.state == "unqualified":
        kind = "initial"
        if risk_decision != "full":
            raise Conflict("An initial qualification needs the full protocol (risk decision full)",
                           code="initial_needs_full")
    elif scope.state in ("requalification_required", "suspended"):
        kind = "requalification"
    else:
        raise Conflict(f"Scope {scope.id} is {scope.state}; a requalification starts only when it is "
                       f"requalification_required or suspended", code="qualification_transition_refused")
    req = Requalification(scope_id=scope.id, kind=kind, state="open", risk_decision=risk_decision,
                          rationale=rationale, protocol=protocol, acceptance_criteria=[], valid_until=valid_until,
                          started_by=actor.id)
    session.add(req)
    session.flush()
    for trig in session.scalars(select(RequalificationTrigger).where(
            RequalificationTrigger.scope_id == scope.id, RequalificationTrigger.requalification_id.is_(None))):
        trig.requalification_id = req.id
    record(session, actor=actor, action="requalification_started", record_type="requalification",
           record_id=req.id, new={"scope_id": scope.id, "kind": kind, "risk_decision": risk_decision,
                                  "rationale": rationale, "protocol": protocol, "valid_until": valid_until})
    if kind == "requalification":
        transition(session, actor=actor, scope=scope, to="requalifying",
                   reason=f"requalification {req.id} started ({risk_decision})")
    return req


def set_criteria(session: Session, *, actor: Principal, requalification_id: int,
                 criteria: list[dict[str, Any]]) -> Requalification:
    """Set acceptance criteria; refused once they are locked."""
    req = get_requalification(session, requalification_id=requalification_id)
    if req.state != "open":
        raise Conflict(f"Acceptance criteria of requalification {req.id} are locked and cannot change",
                       code="criteria_locked")
    old = req.acceptance_criteria
    req.acceptance_criteria = criteria
    record(session, actor=actor, action="criteria_set", record_type="requalification", record_id=req.id,
           old={"criteria": old}, new={"criteria": criteria})
    return req


def lock_criteria(session: Session, *, actor: Principal, requalification_id: int) -> Requalification:
    """Lock the acceptance criteria so that no result can be judged by criteria set afterwards."""
    req = get_requalification(session, requalification_id=requalification_id)
    if req.state != "open":
        raise Conflict(f"Requalification {req.id} is {req.state}; only open criteria can be locked",
                       code="criteria_locked")
    if req.risk_decision != "none" and not req.acceptance_criteria:
        raise Conflict("Acceptance criteria are empty; set them before locking", code="criteria_empty")
    req.state, req.criteria_locked_at, req.criteria_locked_by = "criteria_locked", utcnow(), actor.id
    req.criteria_sha256 = content_sha256(req.acceptance_criteria)
    record(session, actor=actor, action="criteria_locked", record_type="requalification", record_id=req.id,
           new={"criteria_sha256": req.criteria_sha256})
    return req


def _criterion_for(req: Requalification, artefact_type: str, prop: str) -> dict[str, Any] | None:
    for c in req.acceptance_criteria:
        if c["artefact_type"] == artefact_type and c["property"] == prop:
            return c
    return None


def add_artefact(session: Session, *, actor: Principal, requalification_id: int, artefact_type: str, label: str,
                 x_mm: float, y_mm: float, z_mm: float, orientation: str, property: str, measured_value: float,
                 unit: str) -> TestArtefact:
    """Enter a test artefact's result; pass/fail is judged against the locked criteria."""
    req = get_requalification(session, requalification_id=requalification_id)
    if req.state == "open":
        raise Conflict("Acceptance criteria must be locked before any result is entered",
                       code="criteria_not_locked")
    if req.state != "criteria_locked":
        raise Conflict(f"Requalification {req.id} is {req.state}; no more results can be entered",
                       code="requalification_closed")
    if content_sha256(req.acceptance_criteria) != req.criteria_sha256:
        raise Conflict(f"Acceptance criteria of requalification {req.id} changed after locking",
                       code="criteria_tampered")
    crit = _criterion_for(req, artefact_type, property)
    if crit is None:
        raise Conflict(f"No locked acceptance criterion for {artefact_type} {property}", code="no_criterion")
    if unit != crit["unit"]:
        raise Conflict(f"Result unit {unit} differs from the criterion's unit {crit['unit']}", code="unit_mismatch")
    passed = ((crit.get("min") is None or measured_value >= crit["min"])
              and (crit.get("max") is None or measured_value <= crit["max"]))
    art = TestArtefact(requalification_id=req.id, artefact_type=artefact_type, label=label, x_mm=x_mm, y_mm=y_mm,
                       z_mm=z_mm, orientation=orientation, property=property, measured_value=measured_value,
                       unit=unit, passed=passed, entered_by=actor.id)
    session.add(art)
    session.flush()
    session.refresh(req, ["artefacts"])
    record(session, actor=actor, action="artefact_result_entered", record_type="requalification",
           record_id=req.id, new={"artefact_id": art.id, "artefact_type": artefact_type, "label": label,
                                  "position_mm": [x_mm, y_mm, z_mm], "orientation": orientation,
                                  "property": property, "measured_value": measured_value, "unit": unit,
                                  "passed": passed})
    return art


def record_triggers(session: Session, req: Requalification) -> list[RequalificationTrigger]:
    """The triggers a record answers: its own, and those carried forward from the scope's rejected records
    since its last approved one (a rejected requalification does not settle the laser replacement that
    caused it; the next record's approver signs for it). Stable once the record is closed."""
    last_approved = session.scalar(select(func.max(Requalification.id)).where(
        Requalification.scope_id == req.scope_id, Requalification.state == "approved", Requalification.id < req.id))
    carried = select(Requalification.id).where(
        Requalification.scope_id == req.scope_id, Requalification.state == "rejected",
        Requalification.id < req.id, Requalification.id > (last_approved or 0))
    return list(session.scalars(select(RequalificationTrigger).where(
        (RequalificationTrigger.requalification_id == req.id)
        | RequalificationTrigger.requalification_id.in_(carried)).order_by(RequalificationTrigger.id)))


def requalification_content(session: Session, req: Requalification) -> dict[str, Any]:
    """The signable content of a requalification record (what the approver's signature binds to)."""
    triggers = record_triggers(session, req)
    return {
        "id": req.id, "scope_id": req.scope_id, "kind": req.kind, "risk_decision": req.risk_decision,
        "rationale": req.rationale, "protocol": req.protocol, "acceptance_criteria": req.acceptance_criteria,
        "criteria_sha256": req.criteria_sha256, "valid_until": req.valid_until.isoformat(),
        "triggers": [{"id": t.id, "kind": t.kind, "source": t.source, "detail": t.detail} for t in triggers],
        "artefacts": [{"id": a.id, "type": a.artefact_type, "label": a.label, "x": a.x_mm, "y": a.y_mm,
                       "z": a.z_mm, "orientation": a.orientation, "property": a.property,
                       "value": a.measured_value, "unit": a.unit, "passed": a.passed} for a in req.artefacts],
    }


@register_record_hasher("requalification")
def _rehash_requalification(session: Session, record_id: str) -> str | None:
    req = session.get(Requalification, int(record_id))
    if req is None:
        return None
    session.refresh(req, ["artefacts"])
    return content_sha256(requalification_content(session, req))


def approve(session: Session, *, actor: Principal, requalification_id: int, password: str,
            material_supplier: str | None) -> Requalification:
    """Approve with the quality engineer's signature; the scope becomes qualified with a new baseline."""
    req = get_requalification(session, requalification_id=requalification_id)
    scope = get_scope(session, scope_id=req.scope_id)
    problems = approval_blockers(req)
    if problems:
        raise Conflict("Requalification cannot be approved: " + "; ".join(problems), code="approval_blocked")
    if req.state == "criteria_locked" and content_sha256(req.acceptance_criteria) != req.criteria_sha256:
        raise Conflict("Acceptance criteria changed after locking", code="criteria_tampered")
    sig = sign(session, signer=actor, password=password, meaning="approved", record_type="requalification",
               record_id=req.id, record_sha256=content_sha256(requalification_content(session, req)),
               allowed_roles=("quality_engineer",))
    machine = session.get(Machine, scope.machine_id)
    now = utcnow()
    req.state, req.approval_signature_id, req.closed_at = "approved", sig.id, now
    old_baseline = _baseline(scope)
    scope.qualified_at, scope.valid_until = now, req.valid_until
    scope.qualified_software_revision = machine.software_revision
    scope.qualified_firmware_revision = machine.firmware_revision
    scope.qualified_build_prep_software = machine.build_prep_software
    scope.qualified_site, scope.qualified_room = machine.site, machine.room
    if material_supplier is not None:
        scope.qualified_material_supplier = material_supplier
    record(session, actor=actor, action="qualification_baseline_set", record_type="qualification_scope",
           record_id=scope.id, old=old_baseline, new=_baseline(scope),
           reason=f"{req.kind} {req.id} approved (signature {sig.id})")
    transition(session, actor=actor, scope=scope, to="qualified",
               reason=f"{req.kind} {req.id} approved by {sig.printed_name}")
    return req


def _baseline(scope: QualificationScope) -> dict[str, Any]:
    return {"software": scope.qualified_software_revision, "firmware": scope.qualified_firmware_revision,
            "build_prep_software": scope.qualified_build_prep_software, "site": scope.qualified_site,
            "room": scope.qualified_room, "material_supplier": scope.qualified_material_supplier,
            "valid_until": scope.valid_until}


def approval_blockers(req: Requalification) -> list[str]:
    """Everything that stops approval: criteria not locked, missing or failed artefacts."""
    if req.state in ("approved", "rejected"):
        return [f"it is already {req.state}"]
    if req.risk_decision == "none":
        return []
    if req.state != "criteria_locked":
        return ["acceptance criteria are not locked"]
    problems = []
    for c in req.acceptance_criteria:
        got = [a for a in req.artefacts if a.artefact_type == c["artefact_type"] and a.property == c["property"]]
        need = int(c.get("min_count", 1))
        if len(got) < need:
            problems.append(f"{c['artefact_type']} {c['property']}: {len(got)} of {need} results entered")
    for a in req.artefacts:
        if not a.passed:
            problems.append(f"artefact {a.label} ({a.artefact_type} at x={a.x_mm:g} y={a.y_mm:g} z={a.z_mm:g}) "
                            f"failed: {a.property} {a.measured_value:g} {a.unit}")
    return problems


def reject(session: Session, *, actor: Principal, requalification_id: int, reason: str) -> Requalification:
    """Close a requalification as failed; a requalifying scope is suspended."""
    req = get_requalification(session, requalification_id=requalification_id)
    if req.state in ("approved", "rejected"):
        raise Conflict(f"Requalification {req.id} is already {req.state}", code="requalification_closed")
    req.state, req.closed_at, req.closing_note = "rejected", utcnow(), reason
    record(session, actor=actor, action="requalification_rejected", record_type="requalification",
           record_id=req.id, reason=reason)
    scope = get_scope(session, scope_id=req.scope_id)
    if scope.state == "requalifying":
        transition(session, actor=actor, scope=scope, to="suspended", reason=f"requalification {req.id} rejected")
    return req


def list_scopes(session: Session, *, machine_id: str | None = None) -> list[QualificationScope]:
    """Qualification scopes, of one machine or all."""
    q = select(QualificationScope).order_by(QualificationScope.id)
    if machine_id:
        q = q.where(QualificationScope.machine_id == machine_id)
    return list(session.scalars(q))


def triggers_of(session: Session, *, scope_id: int) -> list[RequalificationTrigger]:
    """Every trigger ever recorded on the scope, oldest first (NotFound for an unknown scope)."""
    get_scope(session, scope_id=scope_id)
    return list(session.scalars(select(RequalificationTrigger).where(RequalificationTrigger.scope_id == scope_id)
                                .order_by(RequalificationTrigger.id)))
