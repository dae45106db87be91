"""HTTP endpoint of the release gate."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from server.auth.deps import Credentials, require, require_later
from server.db import SessionDep, session_scope
from server.errors import COMMON_ERRORS
from server.gate import service
from server.gate.schemas import GateDecisionOut, GateDecisionRecord, GateRequest, Reason
from server.security import Principal

router = APIRouter(prefix="/gate", tags=["release gate"], responses=COMMON_ERRORS)
Asker = Annotated[Credentials, Depends(require_later("operator", agents=True))]
Reviewer = Annotated[Principal, Depends(require("quality_engineer", "production_manager"))]


# A worker process with this many other decisions waiting or running sheds connections (see decide).
# 3 of 2, 3, 4 and 8 gave the lowest p99 at 200 req/s (3 runs each; 8 left splits like 17/9 s of CPU).
SHED_CONNECTIONS_AT = 3


@router.post("/decisions", response_model=GateDecisionOut)
async def decide(body: GateRequest, request: Request, response: Response, asker: Asker) -> GateDecisionOut:
    """Allowed, or refused with every reason; the decision is recorded with its inputs."""
    # Asked before every build: authentication, the decision and its commit run in one hop to the
    # gate's own threads (server.app: gate_threads), not in a thread per dependency.
    state = request.app.state
    state.gate_in_flight += 1  # only touched on the event loop: no lock
    try:
        decision = await asyncio.get_running_loop().run_in_executor(state.gate_executor, _decide,
                                                                    state.sessionmaker, asker, body)
    finally:
        state.gate_in_flight -= 1
    if state.gate_in_flight >= SHED_CONNECTIONS_AT:
        # Worker processes share the listening socket and each keeps the keep-alive connections it
        # accepted, so one process can be handed most of the agents while another idles (measured: 16
        # connections split 16/0 in one run of three). A process with a queue asks this client to
        # reconnect; the new connection is most likely accepted by a process that is waiting, not busy.
        response.headers["Connection"] = "close"
    return decision


def _decide(maker, asker: Credentials, body: GateRequest) -> GateDecisionOut:
    with session_scope(maker) as session:
        # The gate's checks read on in the transaction of the authentication, then append its decision.
        actor = asker.check(session, then_write=True)
        d = service.decide(session, actor=actor, **body.model_dump())
    return GateDecisionOut(allowed=d.allowed, reasons=[Reason(**r) for r in d.reasons], decision_id=d.id)


@router.get("/decisions/{decision_id}", response_model=GateDecisionRecord)
def get_decision(decision_id: int, session: SessionDep, actor: Reviewer) -> GateDecisionRecord:
    """A recorded decision with its inputs."""
    d = service.get_decision(session, decision_id=decision_id)
    return GateDecisionRecord(allowed=d.allowed, reasons=[Reason(**r) for r in d.reasons], decision_id=d.id,
                              machine_id=d.machine_id, job_id=d.job_id, build_file_sha256=d.build_file_sha256,
                              operator_id=d.operator_id, requested_by=d.requested_by, decided_at=d.decided_at,
                              inputs=d.inputs)
