"""HTTP endpoints for edge agents (agent token) and their administration (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from sqlalchemy import select

from server.agents import service
from server.agents.schemas import (AgentCreate, AgentIssued, AgentOut, BuildFileCheckIn, BuildFileCheckOut,
                                   ContextOut, ExcursionIn, ExcursionOut, HeartbeatIn, HeartbeatOut, IdentityIn,
                                   IdentityOut, RevokeIn)
from server.auth.deps import require
from server.db import SessionDep
from server.errors import COMMON_ERRORS
from server.models import Agent, BuildFileCheck, QualificationScope, utcnow
from server.security import Principal

router = APIRouter(prefix="/agents", tags=["edge agents"], responses=COMMON_ERRORS)
Admin = Annotated[Principal, Depends(require("admin"))]
AgentOnly = Annotated[Principal, Depends(require(agents=True))]


def _agent_out(agent: Agent) -> dict:
    return {"id": agent.id, "name": agent.name, "machine_ids": sorted(m.machine_id for m in agent.machines),
            "issued_at": agent.issued_at, "revoked_at": agent.revoked_at, "last_seen_at": agent.last_seen_at}


@router.post("", response_model=AgentIssued, status_code=201)
def issue(body: AgentCreate, session: SessionDep, actor: Admin) -> AgentIssued:
    """Issue an agent token scoped to machines (admin); the token is shown once."""
    agent, token = service.issue(session, actor=actor, name=body.name, machine_ids=body.machine_ids)
    return AgentIssued(token=token, **_agent_out(agent))


@router.get("", response_model=list[AgentOut])
def list_agents(session: SessionDep, actor: Admin) -> list[AgentOut]:
    """All agents."""
    return [AgentOut(**_agent_out(a)) for a in session.scalars(select(Agent).order_by(Agent.id))]


@router.post("/{agent_id}/revoke", response_model=AgentOut)
def revoke(agent_id: int, body: RevokeIn, session: SessionDep, actor: Admin) -> AgentOut:
    """Revoke an agent's token."""
    return AgentOut(**_agent_out(service.revoke(session, actor=actor, agent_id=agent_id, reason=body.reason)))


@router.post("/heartbeat", response_model=HeartbeatOut)
def heartbeat(body: HeartbeatIn, session: SessionDep, actor: AgentOnly, request: Request) -> HeartbeatOut:
    """The agent is alive; status.machines (live machine state) goes to the dashboards."""
    status = {**body.status, "agent_version": body.agent_version}
    service.heartbeat(session, actor=actor, machine_ids=body.machine_ids, status=status)
    problems = request.app.state.live.apply_heartbeat(agent=actor.name, allowed_machine_ids=actor.machine_ids,
                                                      status=body.status)
    return HeartbeatOut(agent=actor.name, server_time=utcnow(), live_status_problems=problems)


@router.post("/machines/{machine_id}/identity", response_model=IdentityOut)
def identity(machine_id: str, body: IdentityIn, session: SessionDep, actor: AgentOnly) -> IdentityOut:
    """Report identity and revisions; a revision that differs from the qualified one triggers requalification."""
    m = service.report_identity(session, actor=actor, machine_id=machine_id, **body.model_dump())
    scopes = session.scalars(select(QualificationScope).where(QualificationScope.machine_id == machine_id)
                             .order_by(QualificationScope.id))
    return IdentityOut(machine_id=m.id, software_revision=m.software_revision, firmware_revision=m.firmware_revision,
                       build_prep_software=m.build_prep_software,
                       scopes=[{"id": s.id, "state": s.state, "state_reason": s.state_reason} for s in scopes])


@router.get("/machines/{machine_id}/context", response_model=ContextOut)
def context(machine_id: str, session: SessionDep, actor: AgentOnly) -> ContextOut:
    """Current job, device codes on the machine now, and approved build files (JobApprovals shape)."""
    from server.cycles.service import load_of
    from server.models import ProcessCycle
    from server.nonconformities.service import open_for_job

    job, approvals = service.context(session, actor=actor, machine_id=machine_id)
    recent = service.recent_cycles(session, machine_id=machine_id)
    if job is None:
        # A furnace, washer or sterilizer: its running cycle is the "job", its load the devices,
        # so the edge tags the cycle's time series with the load's device codes.
        cycle = session.scalars(select(ProcessCycle).where(ProcessCycle.machine_id == machine_id,
                                                           ProcessCycle.state == "running")
                                .order_by(ProcessCycle.started_at.desc()).limit(1)).first()
        if cycle is not None:
            return ContextOut(machine_id=machine_id, job_id=f"cycle-{cycle.id}", job_state="running",
                              device_codes=load_of(session, cycle_id=cycle.id), approvals=None,
                              started_ns=service.unix_ns(cycle.started_at), recent_cycles=recent)
    ncs = open_for_job(session, job_id=job.id) if job else []
    return ContextOut(machine_id=machine_id, job_id=str(job.id) if job else None,
                      job_state=job.state if job else None,
                      device_codes=[d.device_code for d in job.devices] if job else [], approvals=approvals,
                      open_nonconformities=[{"id": n.id, "kind": n.kind, "description": n.description} for n in ncs],
                      recent_cycles=recent)


@router.post("/machines/{machine_id}/build-file-checks", response_model=BuildFileCheckOut, status_code=201)
def build_file_check(machine_id: str, body: BuildFileCheckIn, session: SessionDep,
                     actor: AgentOnly) -> BuildFileCheck:
    """Report a build-file check; a failure raises a nonconformity on the job."""
    return service.build_file_check(session, actor=actor, machine_id=machine_id, **body.model_dump())


@router.post("/machines/{machine_id}/excursions", response_model=ExcursionOut, status_code=201)
def excursion(machine_id: str, body: ExcursionIn, session: SessionDep, actor: AgentOnly) -> ExcursionOut:
    """Report a limit excursion; it raises nonconformities (and a requalification trigger when asked)."""
    ncs = service.excursion(session, actor=actor, machine_id=machine_id, **body.model_dump())
    return ExcursionOut(nonconformity_ids=[nc.id for nc in ncs])
