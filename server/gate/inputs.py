"""What the release gate looks at: one read of the records into a typed, read-only snapshot.

Every fact a check uses is a field here, read in as few statements as the rows allow (the gate runs before
every build start). The checks (server/gate/checks.py) are pure functions of this snapshot; the service
(server/gate/service.py) decides when to read it, and records the decision. SOURCES names the tables behind
each field: tests/server/gate/test_gate_checks.py holds every check to the fields it declares and every field
to tables whose changes the audit chain sees, so a decision never rests on something the staleness test
cannot notice."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, exists, func, literal, select
from sqlalchemy.orm import Session, aliased

from server.audit.service import seal_is_intact, settings_of
from server.competence import current_authorisation
from server.designs.service import case_deadline, iteration_content
from server.models import (AuditEntry, Case, Design, DesignFile, DesignIteration, Device, Job, Machine, MaterialLot,
                           Nonconformity, OperatorPresence, QualificationScope, RequalificationTrigger, Signature, User)
from server.nonconformities.service import affecting_job, scope_of
from server.qualification import service as qualification
from server.security import content_sha256


@dataclass(frozen=True)
class Ask:
    """One question to the gate."""

    machine_id: str
    job_id: int
    sha: str
    operator_id: int | None
    now: datetime
    operator_asks: bool = False  # the operator asks for themself (logged in at the kiosk)


@dataclass(frozen=True)
class MachineFacts:
    """The machine as registered: revisions and due dates."""

    id: str
    software_revision: str | None
    firmware_revision: str | None
    build_prep_software: str | None
    calibration_due: date | None
    maintenance_due: date | None


@dataclass(frozen=True)
class LotFacts:
    """The job's material lot (what materials.lot_problems reads)."""

    id: int | None
    lot_number: str | None
    status: str | None
    reuse_count: int | None
    reuse_limit: int | None
    expires_on: date | None


@dataclass(frozen=True)
class JobFacts:
    """The job: where it is planned, its state and what it builds from which lot."""

    id: int
    machine_id: str
    state: str
    process: str
    material: str
    product_family: str
    lot: LotFacts


@dataclass(frozen=True)
class TriggerFacts:
    """An open requalification trigger of the scope."""

    kind: str
    detail: str
    occurred_at: datetime


@dataclass(frozen=True)
class ScopeFacts:
    """The machine's qualification scope for the job's process, material and product family."""

    id: int
    state: str
    state_reason: str | None
    valid_until: date | None
    qualified_software_revision: str | None
    open_triggers: tuple[TriggerFacts, ...]  # newest first


@dataclass(frozen=True)
class SignatureFacts:
    """A signature on a design iteration, with its seal checked."""

    id: int
    signer_role: str
    record_sha256: str
    seal_intact: bool


@dataclass(frozen=True)
class IterationFacts:
    """A design iteration the job's devices are built from."""

    id: int
    design_name: str
    number: int
    status: str
    content_sha256: str
    current_sha256: str  # the iteration's content hash recomputed from its rows now
    file_hashes: tuple[str, ...]
    signatures: tuple[SignatureFacts, ...]
    newest_number: int | None  # the design's latest iteration number (read for a superseded one)


@dataclass(frozen=True)
class CaseFacts:
    """A case the job's devices belong to, with its delivery deadline."""

    id: int
    deadline: datetime


@dataclass(frozen=True)
class NonconformityFacts:
    """An open nonconformity affecting the job (its job, machine, lot or design iterations)."""

    id: int
    kind: str
    description: str
    scope_words: str


@dataclass(frozen=True)
class OperatorFacts:
    """The operator named for the build."""

    id: int
    username: str
    full_name: str
    role: str
    active: bool
    authorised: bool  # holds an unrevoked, unexpired authorisation on this machine


@dataclass(frozen=True)
class GateSnapshot:
    """Everything the gate's checks read, as the records stood at one audit-chain head."""

    ask: Ask
    head_seq: int
    machine: MachineFacts | None
    job: JobFacts | None
    scope: ScopeFacts | None = None
    iterations: tuple[IterationFacts, ...] = ()
    cases: tuple[CaseFacts, ...] = ()
    nonconformities: tuple[NonconformityFacts, ...] = ()
    operator: OperatorFacts | None = None
    presence_at: datetime | None = None  # the operator's latest kiosk identification for this job and machine
    presence_minutes: int = 30
    presence_read: bool = False  # whether presence applies (someone other than the operator asks)
    scope_expired_elsewhere: bool = False  # a qualified scope of this machine past valid_until

    @property
    def buildable(self) -> bool:
        """Machine and job exist, the job is planned for this machine and not closed: the rest is judged."""
        return (self.machine is not None and self.job is not None and self.job.machine_id == self.machine.id
                and self.job.state != "closed")

    def recorded_inputs(self) -> dict[str, Any]:
        """The inputs stored with the decision (what it was based on), in the shape the DHR shows."""
        a = self.ask
        out: dict[str, Any] = {"at": a.now.isoformat(), "machine_id": a.machine_id, "job_id": a.job_id,
                               "build_file_sha256": a.sha, "operator_id": a.operator_id}
        if self.buildable:
            m, s, lot = self.machine, self.scope, self.job.lot
            out["machine"] = {"software": m.software_revision, "firmware": m.firmware_revision,
                              "build_prep_software": m.build_prep_software,
                              "calibration_due": str(m.calibration_due), "maintenance_due": str(m.maintenance_due)}
            if s is None or s.state == "unqualified":
                out["scope"] = None if s is None else {"id": s.id, "state": s.state}
            else:
                out["scope"] = {"id": s.id, "state": s.state, "valid_until": str(s.valid_until),
                                "qualified_software": s.qualified_software_revision}
            out["design_iterations"] = [{"iteration_id": it.id, "status": it.status,
                                         "content_sha256": it.content_sha256,
                                         "signatures": [sig.id for sig in it.signatures],
                                         "files": list(it.file_hashes)} for it in self.iterations]
            out["material_lot"] = {"id": lot.id, "lot_number": lot.lot_number, "status": lot.status,
                                   "reuse_count": lot.reuse_count, "reuse_limit": lot.reuse_limit}
            out["cases"] = [{"case_id": c.id, "deadline": c.deadline.isoformat()} for c in self.cases]
        if a.operator_id is not None:
            o = self.operator
            out["operator"] = None if o is None else {"id": o.id, "username": o.username, "role": o.role}
        if self.presence_read:
            out["operator_identified_at"] = None if self.presence_at is None else self.presence_at.isoformat()
        return out


# The tables behind each snapshot field (tests hold them to what the audit chain watches).
SOURCES: dict[str, tuple[str, ...]] = {
    "ask": (),
    "head_seq": ("audit_entries",),
    "machine": ("machines",),
    "job": ("jobs", "material_lots"),
    "scope": ("qualification_scopes", "requalification_triggers"),
    "iterations": ("devices", "design_iterations", "designs", "design_files", "signatures"),
    "cases": ("devices", "cases"),
    "nonconformities": ("nonconformities", "material_lots"),
    "operator": ("users", "machine_authorisations"),
    "presence_at": ("operator_presence",),
    "presence_minutes": (),  # a setting of the process, not a record
    "presence_read": (),
    "scope_expired_elsewhere": ("qualification_scopes",),
}


class NeedsWrite(Exception):
    """A read-only snapshot met an expiry that must first be recorded as a requalification trigger."""


# Prepared statements: the gate reads a few columns of a dozen rows, so it selects columns on the session's
# connection instead of loading ORM entities (which cost most of a decision), in as few statements as the rows
# allow. _ASK: one row for everything that is at most one row per question (chain head, machine, job and its
# lot, the job's scope on this machine, the operator), joined onto a one-row select, so a missing machine, job
# or operator leaves its columns NULL instead of losing the row.
_ONE = select(literal(1).label("one")).subquery("ask")
_EXPIRED_SCOPE = aliased(QualificationScope)
_ASK = (select(
    select(func.coalesce(func.max(AuditEntry.seq), 0)).scalar_subquery().label("head_seq"),
    Machine.id.label("m_id"), Machine.software_revision.label("m_software_revision"),
    Machine.firmware_revision.label("m_firmware_revision"), Machine.build_prep_software.label("m_build_prep_software"),
    Machine.calibration_due.label("m_calibration_due"), Machine.maintenance_due.label("m_maintenance_due"),
    exists().where(_EXPIRED_SCOPE.machine_id == bindparam("machine_id"), _EXPIRED_SCOPE.state == "qualified",
                   _EXPIRED_SCOPE.valid_until < bindparam("today")).label("scope_expired"),
    Job.id.label("j_id"), Job.machine_id.label("j_machine_id"), Job.state.label("j_state"),
    Job.process.label("j_process"), Job.material.label("j_material"), Job.product_family.label("j_product_family"),
    Job.material_lot_id.label("j_material_lot_id"), MaterialLot.lot_number.label("j_lot_number"),
    MaterialLot.status.label("j_lot_status"), MaterialLot.reuse_count.label("j_reuse_count"),
    MaterialLot.reuse_limit.label("j_reuse_limit"), MaterialLot.expires_on.label("j_expires_on"),
    # The rule of nonconformities.service.open_for_job; the rows are read only when there are any.
    exists().where(Nonconformity.state == "open", affecting_job(bindparam("job_id"), bindparam("machine_id")))
    .label("j_open_nonconformity"),
    QualificationScope.id.label("s_id"), QualificationScope.state.label("s_state"),
    QualificationScope.state_reason.label("s_state_reason"), QualificationScope.valid_until.label("s_valid_until"),
    QualificationScope.qualified_at.label("s_qualified_at"),
    QualificationScope.qualified_software_revision.label("s_qualified_software_revision"),
    User.id.label("u_id"), User.username.label("u_username"), User.full_name.label("u_full_name"),
    User.role.label("u_role"), User.active.label("u_active"),
    # The rule of server.competence.is_authorised_on, the same expression (tests pin revoked and expired).
    current_authorisation(User.id, bindparam("machine_id"), bindparam("today")).label("u_authorised"))
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
# The rule of qualification.open_triggers: the scope's triggers since it was last qualified, newest first.
_TRIGGERS = (select(RequalificationTrigger.kind, RequalificationTrigger.detail, RequalificationTrigger.occurred_at)
             .where(RequalificationTrigger.scope_id == bindparam("scope_id")).order_by(RequalificationTrigger.id.desc()))
_TRIGGERS_SINCE = _TRIGGERS.where(RequalificationTrigger.occurred_at > bindparam("since"))
_PRESENCE = (select(func.max(OperatorPresence.at))
             .where(OperatorPresence.job_id == bindparam("job_id"), OperatorPresence.user_id == bindparam("user_id"),
                    OperatorPresence.machine_id == bindparam("machine_id"), OperatorPresence.at >= bindparam("since")))


def _part(row: Any, prefix: str) -> dict[str, Any] | None:
    """The columns of row named prefix_…, without the prefix; None when the joined row was missing."""
    if row._mapping[f"{prefix}_id"] is None:
        return None
    n = len(prefix) + 1
    return {k[n:]: v for k, v in row._mapping.items() if k.startswith(prefix + "_")}


def read_snapshot(session: Session, ask: Ask, *, may_write: bool) -> GateSnapshot:
    """Read everything the checks need as the session's transaction sees it.

    An expired calibration or scope must first be recorded as a requalification trigger (and move the scopes):
    with may_write that is done here, else NeedsWrite is raised so the caller reads again under the lock."""
    today = ask.now.date()
    session.flush()  # pending changes of the caller are seen, as autoflush would
    conn = session.connection()
    params = {"machine_id": ask.machine_id, "job_id": ask.job_id, "user_id": ask.operator_id, "today": today}
    row = conn.execute(_ASK, params).one()
    m, j = _part(row, "m"), _part(row, "j")
    if m is not None and j is not None and j["machine_id"] == m["id"] and j["state"] != "closed" and \
            ((m["calibration_due"] is not None and m["calibration_due"] < today) or row.scope_expired):
        # Only when something has run out: the time triggers then record it and move the scopes.
        if not may_write:
            raise NeedsWrite
        qualification.apply_time_triggers(session, today=today, machine_id=m["id"])
        session.flush()
        row = conn.execute(_ASK, params).one()
        m, j = _part(row, "m"), _part(row, "j")
    machine = None if m is None else MachineFacts(**m)
    job = None if j is None else JobFacts(
        id=j["id"], machine_id=j["machine_id"], state=j["state"], process=j["process"], material=j["material"],
        product_family=j["product_family"],
        lot=LotFacts(id=j["material_lot_id"], lot_number=j["lot_number"], status=j["lot_status"],
                     reuse_count=j["reuse_count"], reuse_limit=j["reuse_limit"], expires_on=j["expires_on"]))
    u = _part(row, "u")
    operator = None if u is None else OperatorFacts(**u)
    snap: dict[str, Any] = {"ask": ask, "head_seq": row.head_seq, "machine": machine, "job": job,
                            "operator": operator, "scope_expired_elsewhere": bool(row.scope_expired)}
    if machine is not None and job is not None and job.machine_id == machine.id and job.state != "closed":
        devices = conn.execute(_DEVICES, {"job_id": job.id}).all()
        snap["scope"] = _scope(conn, _part(row, "s"))
        snap["iterations"] = _iterations(session, devices)
        snap["cases"] = _cases(session, devices)
        if j["open_nonconformity"]:
            snap["nonconformities"] = tuple(
                NonconformityFacts(id=nc.id, kind=nc.kind, description=nc.description,
                                   scope_words=scope_of(nc, lot_number=lot_number))
                for nc, lot_number in session.execute(_OPEN_NONCONFORMITIES,
                                                      {"job_id": job.id, "machine_id": machine.id}))
    if not ask.operator_asks and operator is not None and operator.active and operator.role == "operator" and \
            machine is not None and job is not None and job.machine_id == machine.id:
        # Anyone but the operator (the edge agent, a manager) must name an operator who identified at the
        # kiosk for this job on this machine, recently (issue 16).
        minutes = settings_of(session).operator_presence_minutes
        snap["presence_read"] = True
        snap["presence_minutes"] = minutes
        snap["presence_at"] = session.execute(_PRESENCE, {
            "job_id": ask.job_id, "user_id": operator.id, "machine_id": ask.machine_id,
            "since": ask.now - timedelta(minutes=minutes)}).scalar()
    return GateSnapshot(**snap)


def _scope(conn: Any, s: dict[str, Any] | None) -> ScopeFacts | None:
    if s is None:
        return None
    triggers: tuple[TriggerFacts, ...] = ()
    if s["state"] in ("requalification_required", "requalifying"):
        q, params = (_TRIGGERS, {"scope_id": s["id"]}) if s["qualified_at"] is None else \
            (_TRIGGERS_SINCE, {"scope_id": s["id"], "since": s["qualified_at"]})
        triggers = tuple(TriggerFacts(kind=t.kind, detail=t.detail, occurred_at=t.occurred_at)
                         for t in conn.execute(q, params))
    return ScopeFacts(id=s["id"], state=s["state"], state_reason=s["state_reason"], valid_until=s["valid_until"],
                      qualified_software_revision=s["qualified_software_revision"], open_triggers=triggers)


@dataclass
class _Iteration:
    """What designs.iteration_content reads of an iteration."""

    id: int
    design_id: int
    number: int
    software_name: str
    software_version: str
    files: list[Any] = field(default_factory=list)


@dataclass
class _Design:
    """What designs.iteration_content reads of a design."""

    id: int
    case_id: int
    intended_use: str | None
    anatomical_site: str | None


def _iterations(session: Session, devices: list[Any]) -> tuple[IterationFacts, ...]:
    """The job's iterations with their files, signatures (seals checked) and current content hash."""
    rows: dict[int, Any] = {}
    for d in devices:
        if d.kind == "device" and d.design_iteration_id not in rows:
            rows[d.design_iteration_id] = d
    if not rows:
        return ()
    conn = session.connection()
    ids = sorted(rows)
    files: dict[int, list[Any]] = {i: [] for i in ids}
    for f in conn.execute(_FILES, {"ids": ids}):
        files[f.iteration_id].append(f)
    sigs: dict[int, list[Any]] = {i: [] for i in ids}
    for sig in conn.execute(_SIGNATURES, {"ids": [str(i) for i in ids]}):
        sigs[int(sig.record_id)].append(sig)
    out = []
    for i in ids:
        d = rows[i]
        content = iteration_content(
            _Design(id=d.design_id, case_id=d.design_case_id, intended_use=d.intended_use,
                    anatomical_site=d.anatomical_site),
            _Iteration(id=i, design_id=d.design_id, number=d.number, software_name=d.software_name,
                       software_version=d.software_version, files=files[i]))
        newest = None
        if d.status == "superseded":
            newest = session.scalar(select(DesignIteration.number).where(DesignIteration.design_id == d.design_id)
                                    .order_by(DesignIteration.number.desc()).limit(1))
        out.append(IterationFacts(
            id=i, design_name=d.design_name, number=d.number, status=d.status, content_sha256=d.content_sha256,
            current_sha256=content_sha256(content), file_hashes=tuple(f.sha256 for f in files[i]),
            signatures=tuple(SignatureFacts(id=s.id, signer_role=s.signer_role, record_sha256=s.record_sha256,
                                            seal_intact=seal_is_intact(session, s)) for s in sigs[i]),
            newest_number=newest))
    return tuple(out)


def _cases(session: Session, devices: list[Any]) -> tuple[CaseFacts, ...]:
    cases = {d.case_id: d for d in devices if d.case_id is not None}
    out = []
    for case_id in sorted(cases):
        case = SimpleNamespace(id=case_id, patient_ref=cases[case_id].patient_ref,
                               surgery_date=cases[case_id].surgery_date)
        out.append(CaseFacts(id=case_id, deadline=case_deadline(session, case)))
    return tuple(out)
