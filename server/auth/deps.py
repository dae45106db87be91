"""FastAPI dependencies: authenticate the caller and check its role (people) or scope (agents)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer

from server.agents.service import principal_for_token as agent_principal
from server.auth.service import principal_from_token
from server.db import SessionDep, end_read_transaction
from server.errors import Forbidden, Unauthorized
from server.security import AGENT_TOKEN_PREFIX, Principal

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False,
                                     description="People: OAuth2 password flow, short-lived JWT")
agent_scheme = HTTPBearer(auto_error=False, scheme_name="AgentToken",
                          description="Edge agents: `Authorization: Bearer amtagent_…` issued by an admin")


def current_principal(session: SessionDep, user_token: Annotated[str | None, Depends(oauth2_scheme)],
                      agent_cred: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_scheme)]
                      ) -> Principal:
    """The authenticated caller, person or agent."""
    token = user_token or (agent_cred.credentials if agent_cred else None)
    if not token:
        raise Unauthorized("Not authenticated: send Authorization: Bearer <token>", code="not_authenticated")
    if token.startswith(AGENT_TOKEN_PREFIX):
        principal = agent_principal(session, token=token)
    else:
        principal = principal_from_token(session, token=token)
    # The endpoint runs in another worker thread: end this read here so its lock (SQLite takes the
    # write lock at BEGIN) is not held while the request waits for that thread.
    end_read_transaction(session)
    return principal


def require(*roles: str, agents: bool = False):
    """Dependency admitting people with one of roles and, when agents=True, edge agents."""
    # async: a pure check, run on the event loop instead of costing the request another thread hop.
    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.kind == "agent":
            if agents:
                return principal
            raise Forbidden("Edge agents may not use this endpoint", code="agent_not_allowed")
        if principal.role in roles:
            return principal
        allowed = ", ".join(roles) if roles else "edge agents only"
        raise Forbidden(f"Role {principal.role} may not do this; allowed: {allowed}", code="role_not_allowed")
    check.allowed_roles = roles  # read by the role × endpoint matrix test
    check.allows_agents = agents
    return check


def require_machine_scope(principal: Principal, machine_id: str) -> None:
    """Refuse an agent acting for a machine outside its scope (people are checked by role)."""
    if principal.kind == "agent" and machine_id not in principal.machine_ids:
        raise Forbidden(f"Agent {principal.name} is not scoped to machine {machine_id}", code="agent_scope")


ANY_PERSON = ("operator", "production_manager", "quality_engineer", "design_engineer", "clinician", "admin")
