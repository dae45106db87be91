"""The release gate: may this build file be built on this machine for this job, now? Every reason, recorded.

Three parts: inputs.py reads the records into a snapshot, checks.py judges it (pure functions), and this module
holds the transaction: when to read, how to stay current against concurrent changes, and the recording."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from server.audit import rows
from server.audit.service import changed_since, lock_chain, record
from server.db import begin_read, is_reading, start_writing
from server.errors import Forbidden, NotFound
from server.gate import checks
from server.gate.inputs import Ask, GateSnapshot, NeedsWrite, read_snapshot
from server.models import GateDecision, Job, OperatorPresence, utcnow
from server.security import Principal

_INSERT_DECISION = GateDecision.__table__.insert().returning(GateDecision.__table__.c.id)
_DECISION_COLUMNS = tuple(c.key for c in GateDecision.__table__.columns if c.key != "id")


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
    ask = Ask(machine_id=machine_id, job_id=job_id, sha=build_file_sha256.lower(), operator_id=operator_id, now=now,
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
    except NeedsWrite:
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


@dataclass
class _Evaluation:
    """Every reason found, the inputs looked at, the job's state and the chain head when they were read."""

    reasons: list[dict[str, str]]
    inputs: dict[str, Any]
    job_state: str | None
    head_seq: int


def _judge(snapshot: GateSnapshot) -> _Evaluation:
    return _Evaluation(reasons=[r.as_dict() for r in checks.evaluate(snapshot)], inputs=snapshot.recorded_inputs(),
                       job_state=None if snapshot.job is None else snapshot.job.state, head_seq=snapshot.head_seq)


def _evaluate(session: Session, ask: Ask, *, may_write: bool) -> _Evaluation:
    """Read the snapshot as the session's transaction sees it and run every check."""
    return _judge(read_snapshot(session, ask, may_write=may_write))


def preview(session: Session, *, machine_id: str, job_id: int, build_file_sha256: str,
            operator_id: int | None, operator_asks: bool) -> list[dict[str, str]] | None:
    """The reasons the gate would give now, reading only; None when an expiry must be recorded first (then only a
    real decision can say, because recording it moves the scopes)."""
    ask = Ask(machine_id=machine_id, job_id=job_id, sha=build_file_sha256.lower(), operator_id=operator_id,
              now=utcnow(), operator_asks=operator_asks)
    try:
        return [r.as_dict() for r in checks.evaluate(read_snapshot(session, ask, may_write=False))]
    except NeedsWrite:
        return None


def _store(session: Session, actor: Principal, ask: Ask, ev: _Evaluation) -> GateDecision:
    """Store the decision, append its audit entry and release a planned job on its first allowed decision."""
    return _record_decision(session, actor, ask, ev, _insert_decision(session, actor, ask, ev))


def _insert_decision(session: Session, actor: Principal, ask: Ask, ev: _Evaluation) -> GateDecision:
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


def _record_decision(session: Session, actor: Principal, ask: Ask, ev: _Evaluation,
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


def get_decision(session: Session, *, decision_id: int) -> GateDecision:
    """A recorded decision (NotFound when there is none)."""
    d = session.get(GateDecision, decision_id)
    if d is None:
        raise NotFound(f"No gate decision {decision_id}", code="decision_not_found")
    return d
