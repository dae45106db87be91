"""The release gate: may this build file be built on this machine for this job, now? Every reason, recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, exists, func, literal, select, update
from sqlalchemy.orm import Session, aliased

from server.audit import rows
from server.audit.service import changed_since, lock_chain, record, seal_is_intact, settings_of
from server.db import begin_read, is_reading, start_writing
from server.errors import Forbidden, NotFound
from server.materials.service import lot_problems
from server.nonconformities.service import affecting_job, scope_of
from server.models import (AuditEntry, Case, Design, DesignFile, DesignIteration, Device, GateDecision, Job, Machine,
                           MachineAuthorisation, MaterialLot, Nonconformity, OperatorPresence, QualificationScope,
                           Signature, User, utcnow)
from server.qualification import service as qualification
from server.security import Principal, content_sha256
from server.designs.service import case_deadline, iteration_content

# Triggers whose own words already carry their date ("qualification expired on 25 Nov 2026"): adding
# the day the trigger was noted would read "expired on 25 Nov 2026 on 26 Nov".
_DATED_TRIGGERS = frozenset({"qualification_expired", "calibration_expired"})

# Prepared statements: the gate runs on every build start and reads a few columns of a dozen rows, so
# it selects columns on the session's connection instead of loading ORM entities (which cost most of
# a decision), in as few statements as the rows allow: every statement is a round trip to PostgreSQL
# and a few hundred microseconds of driver and SQLAlchemy work on either database. decide() flushes
# first, so pending changes of the caller are seen, as autoflush would.
#
# _ASK: one row for everything that is at most one row per question (the audit chain's head, machine,
# job and its lot, the job's qualification scope on this machine, the operator), joined onto a
# one-row select, so a missing machine, job or operator leaves its columns NULL instead of losing the row.
_ONE = select(literal(1).label("one")).subquery("ask")
_EXPIRED_SCOPE = aliased(QualificationScope)
_ASK = (select(
    select(func.coalesce(func.max(AuditEntry.seq), 0)).scalar_subquery().label("head_seq"),
    Machine.id.label("m_id"), Machine.software_revision.label("m_software_revision"),
    Machine.firmware_revision.label("m_firmware_revision"), Machine.build_prep_software.label("m_build_prep_software"),
    Machine.calibration_due.label("m_calibration_due"), Machine.maintenance_due.label("m_maintenance_due"),
    exists().where(_EXPIRED_SCOPE.machine_id == bindparam("machine_id"), _EXPIRED_SCOPE.state == "qualified",
                   _EXPIRED_SCOPE.valid_until < bindparam("today")).label("m_scope_expired"),
    Job.id.label("j_id"), Job.machine_id.label("j_machine_id"), Job.state.label("j_state"),
    Job.process.label("j_process"), Job.material.label("j_material"), Job.product_family.label("j_product_family"),
    Job.material_lot_id.label("j_material_lot_id"), MaterialLot.lot_number.label("j_lot_number"),
    MaterialLot.status.label("j_lot_status"), MaterialLot.reuse_count.label("j_reuse_count"),
    MaterialLot.reuse_limit.label("j_reuse_limit"), MaterialLot.expires_on.label("j_expires_on"),
    # The rule of nonconformities.service.open_for_job (job, machine, lot, design iterations); the rows are
    # read only when there are any.
    exists().where(Nonconformity.state == "open", affecting_job(bindparam("job_id"), bindparam("machine_id")))
    .label("j_open_nonconformity"),
    QualificationScope.id.label("s_id"), QualificationScope.state.label("s_state"),
    QualificationScope.state_reason.label("s_state_reason"), QualificationScope.valid_until.label("s_valid_until"),
    QualificationScope.qualified_at.label("s_qualified_at"),
    QualificationScope.qualified_software_revision.label("s_qualified_software_revision"),
    User.id.label("u_id"), User.username.label("u_username"), User.full_name.label("u_full_name"),
    User.role.label("u_role"), User.active.label("u_active"),
    # The same rule as server.competence.is_authorised_on (tests/server/test_gate.py pins revoked and expired).
    exists().where(MachineAuthorisation.user_id == User.id, MachineAuthorisation.machine_id == bindparam("machine_id"),
                   MachineAuthorisation.revoked_at.is_(None),
                   (MachineAuthorisation.valid_until.is_(None)
                    | (MachineAuthorisation.valid_until >= bindparam("today")))).label("u_authorised"))
    .select_from(_ONE)
    .outerjoin(Machine, Machine.id == bindparam("machine_id"))
    .outerjoin(Job, Job.id == bindparam("job_id"))
    .outerjoin(MaterialLot, MaterialLot.id == Job.material_lot_id)
    .outerjoin(QualificationScope, (QualificationScope.machine_id == Machine.id)
               & (QualificationScope.process == Job.process) & (QualificationScope.material == Job.material)
               & (QualificationScope.product_family == Job.product_family))
    .outerjoin(User, User.id == bindparam("user_id")))
_DEVICES = (select(Device.kind, Device.case_id, Device.design_iteration_id, DesignIteration.design_id,
                   DesignIteration.number, DesignIteration.software_name, DesignIteration.software_version,
                   DesignIteration.content_sha256, DesignIteration.status, Design.case_id.label("design_case_id"),
                   Design.name.label("design_name"),
                   Design.intended_use, Design.anatomical_site, Case.patient_ref, Case.surgery_date)
            .outerjoin(DesignIteration, DesignIteration.id == Device.design_iteration_id)
            .outerjoin(Design, Design.id == DesignIteration.design_id)
            .outerjoin(Case, Case.id == Device.case_id)
            .where(Device.job_id == bindparam("job_id")).order_by(Device.id))
_FILES = (select(DesignFile.iteration_id, DesignFile.file_name, DesignFile.sha256, DesignFile.size_bytes)
          .where(DesignFile.iteration_id.in_(bindparam("ids", expanding=True))).order_by(DesignFile.id))
_SIGNATURES = (select(Signature.id, Signature.user_id, Signature.printed_name, Signature.signer_role,
                      Signature.meaning, Signature.record_type, Signature.record_id, Signature.record_sha256,
                      Signature.signed_at, Signature.seal)
               .where(Signature.record_type == "design_iteration",
                      Signature.record_id.in_(bindparam("ids", expanding=True))).order_by(Signature.id))
_OPEN_NONCONFORMITIES = (select(Nonconformity, MaterialLot.lot_number)
                         .outerjoin(MaterialLot, MaterialLot.id == Nonconformity.material_lot_id)
                         .where(Nonconformity.state == "open",
                                affecting_job(bindparam("job_id"), bindparam("machine_id")))
                         .order_by(Nonconformity.id))
_INSERT_DECISION = GateDecision.__table__.insert().returning(GateDecision.__table__.c.id)
_DECISION_COLUMNS = tuple(c.key for c in GateDecision.__table__.columns if c.key != "id")


def _day(d: date | datetime) -> str:
    return f"{d.day} {d:%b}"


def _full(d: date | datetime) -> str:
    return f"{d.day} {d:%b %Y}"


def _a(noun: str) -> str:
    """The noun with its indefinite article: 'an admin', 'a clinician'."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


class Reasons:
    """Collects refusal reasons as {code, message}."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, code: str, message: str) -> None:
        """Add one reason."""
        self.items.append({"code": code, "message": message})


@dataclass
class _Iteration:
    """What the gate reads of a design iteration (the attributes iteration_content uses)."""

    id: int
    design_id: int
    number: int
    software_name: str
    software_version: str
    content_sha256: str
    status: str
    files: list[Any] = field(default_factory=list)


@dataclass
class _Design:
    """What the gate reads of a design."""

    id: int
    case_id: int
    name: str
    intended_use: str | None  # with the site, part of the signed iteration content (designs.iteration_content)
    anatomical_site: str | None


def decide(session: Session, *, actor: Principal, machine_id: str, job_id: int, build_file_sha256: str,
           operator_id: int | None) -> GateDecision:
    """Decide whether the build may start; refuse with every reason that applies and record the decision.

    Returns the stored decision (with its id) as an object outside the session: decisions are final.
    """
    if actor.kind == "agent" and machine_id not in actor.machine_ids:
        raise Forbidden(f"Agent {actor.name} is not scoped to machine {machine_id}", code="agent_scope")
    if actor.kind == "user" and actor.role == "operator":
        if operator_id is not None and operator_id != actor.id:
            raise Forbidden("An operator can ask the release gate only for themself", code="operator_mismatch")
        operator_id = actor.id
    now = utcnow()
    # The operator who asks for themself (the kiosk's start request) is identified by their own login; anyone else
    # (the edge agent, a manager) must name an operator who identified at the kiosk for this job (issue 16).
    ask = _Ask(machine_id=machine_id, job_id=job_id, sha=build_file_sha256.lower(), operator_id=operator_id, now=now,
               operator_asks=actor.kind == "user" and actor.id == operator_id)
    if session.in_transaction() and not is_reading(session):
        # Inside the caller's unit of work (a kiosk step): decide and record in its transaction, under
        # the chain lock from the first read on (on SQLite the write transaction already is that lock).
        lock_chain(session)
        return _store(session, actor, ask, _evaluate(session, ask, may_write=True))
    # The hot path (the edge asks before every build): evaluate without the write lock, then append
    # under it. SQLite has one writer and PostgreSQL one audit-chain appender at a time, so only the
    # append is serialised, not the reads. Every change the gate depends on is audited; if anything
    # other than a gate decision was recorded after the chain head the evaluation read, the decision
    # is re-evaluated under the lock, so no decision is ever based on superseded state.
    if not session.in_transaction():
        begin_read(session, then_write=True)
    evaluation: _Evaluation | None
    try:
        evaluation = _evaluate(session, ask, may_write=False)
    except _NeedsWrite:
        evaluation = None
    start_writing(session)
    if evaluation is not None:
        # The decision row needs no chain lock (its id comes from the table's own sequence), so it is
        # written before the lock is taken: the lock is then held for the audit entry and the commit only.
        decision = _insert_decision(session, actor, ask, evaluation)
        if not changed_since(session, evaluation.head_seq, ignore=_GATE_ACTIONS):
            return _record_decision(session, actor, ask, evaluation, decision)
        # Superseded while it was read: nothing of this transaction stands; decide again under the lock.
        session.rollback()
    lock_chain(session)
    return _store(session, actor, ask, _evaluate(session, ask, may_write=True))


# Audit actions that the gate itself appends: they do not change what a decision depends on (a job
# released by a concurrent decision is only released once, by the conditional update in _store).
_GATE_ACTIONS = ("gate_decision", "job_released", rows.ACTION)


@dataclass(frozen=True)
class _Ask:
    """One question to the gate."""

    machine_id: str
    job_id: int
    sha: str
    operator_id: int | None
    now: datetime
    operator_asks: bool = False


@dataclass
class _Evaluation:
    """Every reason found, the inputs looked at, the job's state and the chain head when they were read."""

    reasons: list[dict[str, str]]
    inputs: dict[str, Any]
    job_state: str | None
    head_seq: int


class _NeedsWrite(Exception):
    """A read-only evaluation met an expiry that must first be recorded as a requalification trigger."""


def _part(row: Any, prefix: str) -> SimpleNamespace | None:
    """The columns of row named prefix_…, without the prefix; None when the joined row was missing."""
    if row._mapping[f"{prefix}_id"] is None:
        return None
    n = len(prefix) + 1
    return SimpleNamespace(**{k[n:]: v for k, v in row._mapping.items() if k.startswith(prefix + "_")})


def _evaluate(session: Session, ask: _Ask, *, may_write: bool) -> _Evaluation:
    """Run every check against the database as the session's transaction sees it."""
    today = ask.now.date()
    reasons = Reasons()
    inputs: dict[str, Any] = {"at": ask.now.isoformat(), "machine_id": ask.machine_id, "job_id": ask.job_id,
                              "build_file_sha256": ask.sha, "operator_id": ask.operator_id}
    session.flush()
    conn = session.connection()
    params = {"machine_id": ask.machine_id, "job_id": ask.job_id, "user_id": ask.operator_id, "today": today}
    row = conn.execute(_ASK, params).one()
    machine, job = _part(row, "m"), _part(row, "j")
    if machine is not None and job is not None and job.machine_id == machine.id and job.state != "closed" and \
            ((machine.calibration_due is not None and machine.calibration_due < today) or machine.scope_expired):
        # Only when something has run out: the time triggers then record it and move the scopes.
        if not may_write:
            raise _NeedsWrite
        qualification.apply_time_triggers(session, today=today, machine_id=machine.id)
        session.flush()
        row = conn.execute(_ASK, params).one()
        machine, job = _part(row, "m"), _part(row, "j")
    if machine is None:
        reasons.add("machine_unknown", f"Machine {ask.machine_id} is not registered")
    if job is None:
        reasons.add("job_unknown", f"Job {ask.job_id} does not exist")
    if machine is not None and job is not None:
        if job.machine_id != machine.id:
            reasons.add("job_not_for_machine", f"Job {job.id} is planned for machine {job.machine_id}, "
                                               f"not {machine.id}")
        elif job.state == "closed":
            reasons.add("job_closed", f"Job {job.id} is already closed")
        else:
            devices = conn.execute(_DEVICES, {"job_id": job.id}).all()
            _check_machine(session, reasons, inputs, machine, job, _part(row, "s"), today)
            _check_designs(session, reasons, inputs, job, devices, ask.sha)
            _check_material(reasons, inputs, job, today)
            _check_cases(session, reasons, inputs, devices, ask.now)
            if job.open_nonconformity:
                for nc, lot_number in session.execute(_OPEN_NONCONFORMITIES,
                                                      {"job_id": job.id, "machine_id": machine.id}):
                    reasons.add("open_nonconformity", f"Open nonconformity {nc.id} ({nc.kind.replace('_', ' ')}) "
                                                      f"on {scope_of(nc, lot_number=lot_number)} must be "
                                                      f"dispositioned first: {nc.description}")
        user = _part(row, "u")
        _check_operator(reasons, inputs, machine, ask.operator_id, user)
        if not ask.operator_asks and user is not None and user.active and user.role == "operator" and \
                job.machine_id == machine.id:
            _check_presence(session, reasons, inputs, ask, user)
    return _Evaluation(reasons=reasons.items, inputs=inputs, job_state=None if job is None else job.state,
                       head_seq=row.head_seq)


def _store(session: Session, actor: Principal, ask: _Ask, ev: _Evaluation) -> GateDecision:
    """Store the decision, append its audit entry and release a planned job on its first allowed decision."""
    return _record_decision(session, actor, ask, ev, _insert_decision(session, actor, ask, ev))


def _insert_decision(session: Session, actor: Principal, ask: _Ask, ev: _Evaluation) -> GateDecision:
    """Insert the decision row; the returned object carries the stored values and id, outside the session."""
    decision = GateDecision(machine_id=ask.machine_id, job_id=ask.job_id, build_file_sha256=ask.sha,
                            operator_id=ask.operator_id, requested_by=actor.actor, allowed=not ev.reasons,
                            reasons=ev.reasons, inputs=ev.inputs, decided_at=ask.now)
    # Decisions are never changed after they are stored: a plain INSERT … RETURNING id, without the
    # unit of work.
    values = {c: getattr(decision, c) for c in _DECISION_COLUMNS}
    decision.id = session.connection().execute(_INSERT_DECISION, values).scalar_one()
    # Outside the unit of work: sealed from the values written, in the decision's own audit entry.
    rows.seal_known(session, "gate_decisions", decision.id, {**values, "id": decision.id})
    return decision


def _record_decision(session: Session, actor: Principal, ask: _Ask, ev: _Evaluation,
                     decision: GateDecision) -> GateDecision:
    """Append the decision's audit entry and release a planned job on its first allowed decision."""
    record(session, actor=actor, action="gate_decision", record_type="job", record_id=ask.job_id,
           new={"decision_id": decision.id, "allowed": decision.allowed, "machine_id": ask.machine_id,
                "build_file_sha256": ask.sha, "operator_id": ask.operator_id,
                "reasons": [r["code"] for r in ev.reasons]})
    if decision.allowed and ev.job_state == "planned":
        # Conditional update: of two allowed decisions racing on PostgreSQL only one releases the job
        # (and records it); the ORM copy of the job, if loaded, is updated too.
        released = session.execute(update(Job).where(Job.id == ask.job_id, Job.state == "planned")
                                   .values(state="released")).rowcount
        if released:
            rows.touch(session, "jobs", ask.job_id)
            record(session, actor=actor, action="job_released", record_type="job", record_id=ask.job_id,
                   old={"state": "planned"}, new={"state": "released"}, reason=f"gate decision {decision.id}")
    return decision


def _check_machine(session: Session, reasons: Reasons, inputs: dict, machine: Any, job: Any, scope: Any,
                   today: date) -> None:
    calibration_overdue = machine.calibration_due is not None and machine.calibration_due < today
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
            because = "; ".join(t.detail if t.kind in _DATED_TRIGGERS else f"{t.detail} on {_day(t.occurred_at)}"
                                for t in reversed(triggers)) or scope.state_reason or "requalification pending"
            prefix = "requires requalification" if scope.state == "requalification_required" else \
                "is being requalified"
            reasons.add("machine_not_qualified", f"Machine {prefix}: {because}")
        elif scope.state == "suspended":
            reasons.add("machine_not_qualified", f"Machine {machine.id} is suspended for {what}: "
                                                 f"{scope.state_reason}")
        if scope.valid_until is not None and scope.valid_until < today:
            reasons.add("qualification_expired", f"Qualification of machine {machine.id} for {what} expired on "
                                                 f"{_full(scope.valid_until)}")
    if machine.calibration_due is None or calibration_overdue:
        due = _full(machine.calibration_due) if machine.calibration_due else "never recorded"
        reasons.add("calibration_overdue", f"Machine calibration is out of date (due {due})")
    if machine.maintenance_due is None or machine.maintenance_due < today:
        due = _full(machine.maintenance_due) if machine.maintenance_due else "never recorded"
        reasons.add("maintenance_overdue", f"Preventive maintenance of the machine is overdue (due {due})")


def _load_iterations(session: Session, devices: list[Any]) -> dict[int, tuple[_Iteration, _Design, list[Any]]]:
    """The job's iterations (read with its devices) with their files and signatures: two more queries."""
    loaded: dict[int, tuple[_Iteration, _Design, list[Any]]] = {}
    for d in devices:
        if d.kind == "device" and d.design_iteration_id not in loaded:
            it = _Iteration(id=d.design_iteration_id, design_id=d.design_id, number=d.number,
                            software_name=d.software_name, software_version=d.software_version,
                            content_sha256=d.content_sha256, status=d.status)
            loaded[it.id] = (it, _Design(id=d.design_id, case_id=d.design_case_id, name=d.design_name,
                                                  intended_use=d.intended_use, anatomical_site=d.anatomical_site), [])
    if not loaded:
        return loaded
    conn = session.connection()
    ids = sorted(loaded)
    for f in conn.execute(_FILES, {"ids": ids}):
        loaded[f.iteration_id][0].files.append(f)
    for sig in conn.execute(_SIGNATURES, {"ids": [str(i) for i in ids]}):
        loaded[int(sig.record_id)][2].append(sig)
    return loaded


def _check_designs(session: Session, reasons: Reasons, inputs: dict, job: Any, devices: list[Any],
                   sha: str) -> None:
    approved_hashes: set[str] = set()
    snapshot = []
    loaded = _load_iterations(session, devices)
    for it_id in sorted(loaded):
        it, design, sigs = loaded[it_id]
        name = f"Design '{design.name}' iteration {it.number}"
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
        # Every decision recomputes the iteration's content hash from its current rows and checks each
        # signature's seal (one HMAC each): nothing is taken from a cache.
        current = content_sha256(iteration_content(design, it))
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


@dataclass
class _Lot:
    """What lot_problems reads of a material lot."""

    id: int
    lot_number: str
    status: str
    reuse_count: int
    reuse_limit: int
    expires_on: date | None


def _check_material(reasons: Reasons, inputs: dict, job: Any, today: date) -> None:
    lot = _Lot(id=job.material_lot_id, lot_number=job.lot_number, status=job.lot_status,
               reuse_count=job.reuse_count, reuse_limit=job.reuse_limit, expires_on=job.expires_on)
    inputs["material_lot"] = {"id": lot.id, "lot_number": lot.lot_number, "status": lot.status,
                              "reuse_count": lot.reuse_count, "reuse_limit": lot.reuse_limit}
    for problem in lot_problems(lot, today=today):
        reasons.add("material_lot_invalid", problem[0].upper() + problem[1:])


def _check_cases(session: Session, reasons: Reasons, inputs: dict, devices: list[Any], now: datetime) -> None:
    snapshot = []
    cases = {d.case_id: d for d in devices if d.case_id is not None}
    for case_id in sorted(cases):
        case = SimpleNamespace(id=case_id, patient_ref=cases[case_id].patient_ref,
                               surgery_date=cases[case_id].surgery_date)
        deadline = case_deadline(session, case)
        snapshot.append({"case_id": case.id, "deadline": deadline.isoformat()})
        if now >= deadline:
            # Said to the operator at the kiosk and the machine: the case by number and its deadline only, not the
            # patient reference or the surgery date (R11: only what the step needs).
            reasons.add("case_deadline_passed", f"Case {case.id}: delivery deadline {_full(deadline)} has passed")
    inputs["cases"] = snapshot


_PRESENCE = (select(func.max(OperatorPresence.at))
             .where(OperatorPresence.job_id == bindparam("job_id"), OperatorPresence.user_id == bindparam("user_id"),
                    OperatorPresence.machine_id == bindparam("machine_id"), OperatorPresence.at >= bindparam("since")))


def _check_presence(session: Session, reasons: Reasons, inputs: dict, ask: _Ask, user: Any) -> None:
    """The named operator identified at the kiosk for this job on this machine, recently: else anyone holding an
    agent token could name any authorised operator for a build nobody attended."""
    minutes = settings_of(session).operator_presence_minutes
    seen = session.execute(_PRESENCE, {"job_id": ask.job_id, "user_id": user.id, "machine_id": ask.machine_id,
                                       "since": ask.now - timedelta(minutes=minutes)}).scalar()
    inputs["operator_identified_at"] = None if seen is None else seen.isoformat()
    if seen is None:
        reasons.add("operator_not_identified", f"{user.full_name} has not identified at the kiosk for job "
                                               f"{ask.job_id} on machine {ask.machine_id} in the last {minutes} "
                                               f"minutes: scan the job at the kiosk with your badge")


def identify_operator(session: Session, *, actor: Principal, job_id: int) -> OperatorPresence:
    """Record that this operator is at the kiosk for the job (its machine): for operator_presence_minutes the edge
    agent may name them in the job's gate request."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"No job {job_id}", code="job_not_found")
    presence = OperatorPresence(user_id=actor.id, machine_id=job.machine_id, job_id=job.id, at=utcnow(), via="kiosk")
    session.add(presence)
    session.flush()
    record(session, actor=actor, action="operator_identified", record_type="job", record_id=job.id,
           new={"machine_id": job.machine_id, "via": "kiosk", "presence_id": presence.id})
    return presence


def _check_operator(reasons: Reasons, inputs: dict, machine: Any, operator_id: int | None, user: Any) -> None:
    if operator_id is None:
        reasons.add("operator_unknown", "No operator was named for this build")
        return
    inputs["operator"] = None if user is None else {"id": user.id, "username": user.username, "role": user.role}
    if user is None or not user.active:
        reasons.add("operator_unknown", f"Operator {operator_id} is not an active user")
    elif user.role != "operator":
        reasons.add("operator_not_authorised", f"{user.full_name} is {_a(user.role.replace('_', ' '))}, "
                                               f"not an operator")
    elif machine is not None and not user.authorised:
        reasons.add("operator_not_authorised", f"Operator {user.full_name} is not authorised on machine "
                                               f"{machine.id}")
