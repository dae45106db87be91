"""Edge agents: tokens scoped to machines, heartbeats, identity reports, job context, edge-raised nonconformities."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from server.agents.schemas import AgentContext, CycleWindow
from server.audit.service import record
from server.cycles.service import MAX_CYCLE, load_of
from server.errors import Conflict, Forbidden, NotFound, Unauthorized
from server.jobs import service as jobs
from server.live import state as live
from server.machines import service as machines
from server.materials.service import lot_problems
from server.models import (Agent, AgentMachine, BuildFileCheck, Device, Job, Machine, MaterialLot, Nonconformity,
                           ProcessCycle, QualificationScope, utcnow)
from server.nonconformities.service import open_for_job, raise_nonconformity
from server.qualification import service as qualification
from server.security import AGENT_TOKEN_PREFIX, Principal


def check_scope(actor: Principal, machine_id: str) -> None:
    """An agent acts only for its own machines."""
    if actor.kind != "agent" or machine_id not in actor.machine_ids:
        raise Forbidden(f"Agent {actor.name} is not scoped to machine {machine_id}", code="agent_scope")


# One prepared statement: the agent with its machines, looked up by the SHA-256 of its token.
_AGENT_BY_TOKEN = (select(Agent.id, Agent.name, Agent.revoked_at, AgentMachine.machine_id)
                   .outerjoin(AgentMachine, AgentMachine.agent_id == Agent.id)
                   .where(Agent.token_sha256 == bindparam("digest")))


def principal_for_token(session: Session, *, token: str) -> Principal:
    """The agent a bearer token belongs to; revoked or unknown tokens are refused (checked every request)."""
    rows = session.connection().execute(
        _AGENT_BY_TOKEN, {"digest": hashlib.sha256(token.encode()).hexdigest()}).all()
    if not rows or rows[0].revoked_at is not None:
        raise Unauthorized("Agent token is unknown or revoked", code="agent_token_invalid")
    agent = rows[0]
    return Principal(kind="agent", id=agent.id, name=agent.name, full_name=f"edge agent {agent.name}",
                     machine_ids=frozenset(r.machine_id for r in rows if r.machine_id is not None))


def issue(session: Session, *, actor: Principal, name: str, machine_ids: list[str]) -> tuple[Agent, str]:
    """Issue an agent token (shown once; only its SHA-256 is stored)."""
    if session.scalar(select(Agent.id).where(Agent.name == name)) is not None:
        raise Conflict(f"An agent named {name} exists", code="agent_exists")
    for m in machine_ids:
        if session.get(Machine, m) is None:
            raise NotFound(f"No machine {m}", code="machine_not_found")
    _refuse_owned(session, actor=actor, name=name, machine_ids=machine_ids)
    # 256 bits of randomness: a fast hash is enough, there is nothing to brute-force.
    token = AGENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
    agent = Agent(name=name, token_sha256=hashlib.sha256(token.encode()).hexdigest(), issued_by=actor.id)
    session.add(agent)
    session.flush()
    for m in sorted(set(machine_ids)):
        session.add(AgentMachine(agent_id=agent.id, machine_id=m))
    session.flush()
    session.refresh(agent, ["machines"])
    record(session, actor=actor, action="agent_token_issued", record_type="agent", record_id=agent.id,
           new={"name": name, "machine_ids": sorted(set(machine_ids))})
    return agent, token


def owners(session: Session, machine_ids: list[str]) -> dict[str, str]:
    """The active (not revoked) agent that owns each of these machines, by machine id."""
    rows = session.execute(select(AgentMachine.machine_id, Agent.name).join(Agent, Agent.id == AgentMachine.agent_id)
                           .where(AgentMachine.machine_id.in_(machine_ids), Agent.revoked_at.is_(None))).all()
    return {m: a for m, a in rows}


def _refuse_owned(session: Session, *, actor: Principal, name: str, machine_ids: list[str]) -> None:
    """One agent per machine: two would both write its data, each under the job context it holds, and both drive its
    interlock. A machine moves to another agent once its agent is revoked (retired)."""
    owned = owners(session, machine_ids)
    if owned:
        text = "; ".join(f"machine {m} belongs to agent {a}" for m, a in sorted(owned.items()))
        record(session, actor=actor, action="agent_claim_refused", record_type="agent", record_id=name,
               new={"name": name, "machine_ids": sorted(set(machine_ids)), "owners": owned})
        raise Conflict(f"{text}: one agent per machine; revoke that agent first to hand the machine over",
                       code="machine_owned", keep_audit=True)


def revoke(session: Session, *, actor: Principal, agent_id: int, reason: str) -> Agent:
    """Revoke an agent's token; its machines are free to be handed to another agent."""
    agent = session.get(Agent, agent_id)
    if agent is None:
        raise NotFound(f"No agent {agent_id}", code="agent_not_found")
    if agent.revoked_at is None:
        agent.revoked_at = utcnow()
        record(session, actor=actor, action="agent_token_revoked", record_type="agent", record_id=agent.id,
               reason=reason)
    return agent


def heartbeat(session: Session, *, actor: Principal, machine_ids: list[str] | None, status: dict[str, Any],
              agent_version: str) -> list[str]:
    """Note that the agent (and the machines it reports for) is alive and store its machines' live state; return
    one sentence per live-state entry refused."""
    for m in machine_ids or []:
        check_scope(actor, m)
    now = utcnow()
    agent = session.get(Agent, actor.id)
    # The machines' live state has its own table (shared by every server instance); the agent row keeps the rest.
    agent.last_seen_at = now
    agent.last_status = {**{k: v for k, v in status.items() if k != "machines"}, "agent_version": agent_version}
    for m in machine_ids or sorted(actor.machine_ids):
        session.get(Machine, m).last_heartbeat_at = now
    return live.apply_heartbeat(session, agent=actor.name, allowed_machine_ids=actor.machine_ids, status=status)


def report_identity(session: Session, *, actor: Principal, machine_id: str, **identity: Any) -> Machine:
    """Machine identity and revisions read by the edge; a changed revision triggers requalification."""
    check_scope(actor, machine_id)
    return machines.report_identity(session, actor=actor, machine_id=machine_id, **identity)


def context(session: Session, *, actor: Principal, machine_id: str) -> AgentContext:
    """What is on the machine now: its job (or, on a furnace, washer or sterilizer, its running cycle),
    the device codes, approved files, open nonconformities and the recent cycles with their recorded times."""
    check_scope(actor, machine_id)
    machines.get_machine(session, machine_id=machine_id)
    job = jobs.current_job(session, machine_id=machine_id)
    recent = recent_cycles(session, machine_id=machine_id)
    scopes = scopes_of(session, machine_id=machine_id)
    if job is None:
        # A furnace, washer or sterilizer: its running cycle is the "job", its load the devices,
        # so the edge tags the cycle's time series with the load's device codes.
        cycle = session.scalars(select(ProcessCycle).where(ProcessCycle.machine_id == machine_id,
                                                           ProcessCycle.state == "running")
                                .order_by(ProcessCycle.started_at.desc()).limit(1)).first()
        if cycle is not None:
            return AgentContext(machine_id=machine_id, job_id=f"cycle-{cycle.id}", job_state="running",
                              device_codes=load_of(session, cycle_id=cycle.id), approvals=None,
                              started_ns=unix_ns(cycle.started_at), recent_cycles=recent, scopes=scopes)
        return AgentContext(machine_id=machine_id, job_id=None, job_state=None, device_codes=[], approvals=None,
                          recent_cycles=recent, scopes=scopes)
    ncs = open_for_job(session, job_id=job.id)
    lot = session.get(MaterialLot, job.material_lot_id)
    return AgentContext(machine_id=machine_id, job_id=str(job.id), job_state=job.state,
                      blocking_reasons=lot_problems(lot, today=utcnow().date()),
                      device_codes=[d.device_code for d in job.devices],
                      approvals=jobs.job_approvals(session, job=job),
                      open_nonconformities=[{"id": n.id, "kind": n.kind, "description": n.description} for n in ncs],
                      recent_cycles=recent, scopes=scopes)


def scopes_of(session: Session, *, machine_id: str) -> list[dict[str, Any]]:
    """The machine's qualification scopes as the edge reads them: id, state and why."""
    return [{"id": s.id, "state": s.state, "state_reason": s.state_reason}
            for s in session.scalars(select(QualificationScope).where(QualificationScope.machine_id == machine_id)
                                     .order_by(QualificationScope.id))]


def context_etag(ctx: AgentContext) -> str:
    """A short digest of a context: the agent sends it back and waits until the context differs."""
    return hashlib.sha256(ctx.model_dump_json().encode()).hexdigest()[:32]


def _job_on_machine(session: Session, machine_id: str, job_id: int | None) -> Job | None:
    if job_id is None:
        return None
    job = session.get(Job, job_id)
    if job is None or job.machine_id != machine_id:
        raise Conflict(f"Job {job_id} is not a job of machine {machine_id}", code="job_not_for_machine")
    return job


def build_file_check(session: Session, *, actor: Principal, machine_id: str, job_id: int | None, file_name: str,
                     sha256: str, passed: bool, detail: str) -> BuildFileCheck:
    """Record a build-file check; a failed one raises a nonconformity that blocks the job."""
    check_scope(actor, machine_id)
    _job_on_machine(session, machine_id, job_id)
    check = BuildFileCheck(machine_id=machine_id, job_id=job_id, agent_id=actor.id, file_name=file_name,
                           sha256=sha256.lower(), passed=passed, detail=detail)
    session.add(check)
    session.flush()
    record(session, actor=actor, action="build_file_checked", record_type="machine", record_id=machine_id,
           new={"check_id": check.id, "job_id": job_id, "file_name": file_name, "sha256": check.sha256,
                "passed": passed, "detail": detail})
    if not passed:
        nc = raise_nonconformity(session, actor=actor, kind="build_file_mismatch",
                                 description=f"Build file {file_name} failed the check: {detail}",
                                 machine_id=machine_id, job_id=job_id,
                                 details={"check_id": check.id, "sha256": check.sha256})
        check.nonconformity_id = nc.id
    return check


def excursion(session: Session, *, actor: Principal, machine_id: str, job_id: int | None, signal: str,
              value: float, limit: float, unit: str, description: str, device_codes: list[str],
              requires_requalification: bool) -> list[Nonconformity]:
    """Record a process-limit excursion as nonconformities (per device, or on the job/machine)."""
    check_scope(actor, machine_id)
    _job_on_machine(session, machine_id, job_id)
    details = {"signal": signal, "value": value, "limit": limit, "unit": unit}
    text = f"{signal} {value:g} {unit} beyond limit {limit:g} {unit}: {description}"
    if device_codes:
        ncs = [raise_nonconformity(session, actor=actor, kind="limit_excursion", description=text,
                                   machine_id=machine_id, job_id=job_id, device_code=c, details=details)
               for c in device_codes]
    else:
        ncs = [raise_nonconformity(session, actor=actor, kind="limit_excursion", description=text,
                                   machine_id=machine_id, job_id=job_id, details=details)]
    if requires_requalification:
        qualification.trigger_machine_scopes(session, actor=actor, machine_id=machine_id, kind="process_excursion",
                                             detail=f"process excursion: {signal} {value:g} {unit} "
                                                    f"(limit {limit:g} {unit})", new_value=f"{signal}={value:g}")
    return ncs


def local_override(session: Session, *, actor: Principal, machine_id: str, job: str, device_codes: list[str],
                   reason: str, start_ns: int, end_ns: int | None) -> list[Nonconformity]:
    """A local assignment overrode the server's job context: one nonconformity per device it tagged (a candidate
    for disposition; open, it stops the device's release). Reported again with end_ns when it ended: the same
    nonconformities get the end of the interval (idempotent by machine and start)."""
    check_scope(actor, machine_id)
    known = session.scalars(select(Nonconformity).where(Nonconformity.kind == "local_override",
                                                        Nonconformity.machine_id == machine_id)).all()
    same = [n for n in known if n.details.get("start_ns") == start_ns]
    if same:
        if end_ns is not None:
            for n in same:
                if n.details.get("end_ns") is None:
                    n.details = {**n.details, "end_ns": end_ns}
        return same
    details = {"job": job, "devices": device_codes, "reason": reason, "start_ns": start_ns, "end_ns": end_ns}
    start = datetime.fromtimestamp(start_ns / 1e9, tz=timezone.utc).isoformat(timespec="seconds")
    text = (f"Data of {machine_id} from {start} was tagged by a local assignment (job {job}, devices "
            f"{', '.join(device_codes) or 'none'}) instead of the server's job context: {reason}")
    codes = set(session.scalars(select(Device.device_code).where(Device.device_code.in_(device_codes))))
    if codes:
        return [raise_nonconformity(session, actor=actor, kind="local_override", description=text[:2000],
                                    machine_id=machine_id, device_code=c, details=details) for c in sorted(codes)]
    return [raise_nonconformity(session, actor=actor, kind="local_override", description=text[:2000],
                                machine_id=machine_id, details=details)]


def unix_ns(at: datetime) -> int:
    """A stored time (naive on SQLite = UTC) as Unix nanoseconds."""
    return int(at.replace(tzinfo=at.tzinfo or timezone.utc).timestamp() * 1_000_000) * 1000


def recent_cycles(session: Session, *, machine_id: str) -> list[CycleWindow]:
    """The machine's cycles started in the last 7 days (at most 20), newest first, with their recorded times."""
    since = utcnow() - MAX_CYCLE
    cycles = session.scalars(select(ProcessCycle).where(ProcessCycle.machine_id == machine_id,
                                                        ProcessCycle.started_at >= since)
                             .order_by(ProcessCycle.started_at.desc()).limit(20))
    return [CycleWindow(job_id=f"cycle-{c.id}", device_codes=load_of(session, cycle_id=c.id),
                        start_ns=unix_ns(c.started_at), end_ns=unix_ns(c.ended_at) if c.ended_at else None)
            for c in cycles]


def list_agents(session: Session) -> list[Agent]:
    """Every agent ever issued a token, revoked ones included."""
    return list(session.scalars(select(Agent).order_by(Agent.id)))
