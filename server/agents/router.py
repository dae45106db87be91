"""HTTP endpoints for edge agents (agent token) and their administration (admin)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from server.agents import service
from server.agents.schemas import (AgentCreate, AgentIssued, AgentOut, BuildFileCheckIn, BuildFileCheckOut,
                                   AgentContext, ExcursionIn, ExcursionOut, HeartbeatIn, HeartbeatOut, IdentityIn,
                                   IdentityOut, LocalOverrideIn, LocalOverrideOut, RevokeIn)
from server.auth.deps import Credentials, require, require_later
from server.db import SessionDep, session_scope
from server.errors import COMMON_ERRORS
from server.models import Agent, BuildFileCheck, utcnow
from server.security import Principal

router = APIRouter(prefix="/agents", tags=["edge agents"], responses=COMMON_ERRORS)
Admin = Annotated[Principal, Depends(require("admin"))]
AgentOnly = Annotated[Principal, Depends(require(agents=True))]
# The long poll authenticates in its own worker thread at each read (require_later): no session is held while it waits.
AgentLater = Annotated[Credentials, Depends(require_later(agents=True))]
# The longest an agent may ask the server to hold a context request open.
MAX_WAIT_S = 60.0


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
    return [AgentOut(**_agent_out(a)) for a in service.list_agents(session)]


@router.post("/{agent_id}/revoke", response_model=AgentOut)
def revoke(agent_id: int, body: RevokeIn, session: SessionDep, actor: Admin) -> AgentOut:
    """Revoke an agent's token."""
    return AgentOut(**_agent_out(service.revoke(session, actor=actor, agent_id=agent_id, reason=body.reason)))


@router.post("/heartbeat", response_model=HeartbeatOut)
def heartbeat(body: HeartbeatIn, session: SessionDep, actor: AgentOnly, request: Request) -> HeartbeatOut:
    """The agent is alive; status.machines (live machine state) goes to the dashboards."""
    problems = service.heartbeat(session, actor=actor, machine_ids=body.machine_ids, status=body.status,
                                 agent_version=body.agent_version)
    return HeartbeatOut(agent=actor.name, server_time=utcnow(), live_status_problems=problems,
                        machine_ids=sorted(actor.machine_ids))


@router.post("/machines/{machine_id}/identity", response_model=IdentityOut)
def identity(machine_id: str, body: IdentityIn, session: SessionDep, actor: AgentOnly) -> IdentityOut:
    """Report identity and revisions; a revision that differs from the qualified one triggers requalification."""
    m = service.report_identity(session, actor=actor, machine_id=machine_id, **body.model_dump())
    return IdentityOut(machine_id=m.id, software_revision=m.software_revision, firmware_revision=m.firmware_revision,
                       build_prep_software=m.build_prep_software, scopes=service.scopes_of(session, machine_id=m.id))


@router.get("/machines/{machine_id}/context", response_model=AgentContext)
async def context(machine_id: str, request: Request, response: Response, asker: AgentLater,
                  wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description=(
                      "Long poll: when the context still matches `known`, wait up to this many seconds "
                      "for it to change before answering"))] = 0,
                  known: Annotated[str | None, Query(max_length=64, description=(
                      "The ETag of the context the agent holds"))] = None) -> AgentContext:
    """Current job, device codes on the machine now, approved build files and recent cycles (ETag header).

    With wait_s and known, a long poll: answered the moment a commit changes the context, so the agent
    tags readings from a cycle's start instead of from its next look at the server.
    """
    changes = request.app.state.context_changes
    deadline = time.monotonic() + wait_s
    while True:
        # Registered before the read: a commit between the read and the wait still wakes it.
        waiter = changes.watch(machine_id)
        try:
            ctx = await run_in_threadpool(_context_now, request.app.state.sessionmaker, asker, machine_id)
            tag = service.context_etag(ctx)
            remaining = deadline - time.monotonic()
            if tag != known or remaining <= 0 or await request.is_disconnected():
                response.headers["ETag"] = tag
                return ctx
            try:
                await asyncio.wait_for(waiter.wait(), min(remaining, changes.recheck_s))
            except asyncio.TimeoutError:
                pass
        finally:
            changes.forget(machine_id, waiter)


def _context_now(maker, asker: Credentials, machine_id: str) -> AgentContext:
    with session_scope(maker) as session:
        actor = asker.check(session)
        return service.context(session, actor=actor, machine_id=machine_id)


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


@router.post("/machines/{machine_id}/local-overrides", response_model=LocalOverrideOut, status_code=201)
def local_override(machine_id: str, body: LocalOverrideIn, session: SessionDep, actor: AgentOnly) -> LocalOverrideOut:
    """Report a local assignment that overrode the server's job context (and, again, its end): it raises a
    nonconformity per device it tagged, and the DHR names the interval."""
    ncs = service.local_override(session, actor=actor, machine_id=machine_id, **body.model_dump())
    return LocalOverrideOut(nonconformity_ids=[n.id for n in ncs])
