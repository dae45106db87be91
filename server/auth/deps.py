"""FastAPI dependencies: authenticate the caller and check its role (people) or scope (agents)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer

from server.auth.service import principal_from_token
from server.db import SessionDep
from server.errors import Forbidden, Unauthorized
from server.security import Principal

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
    return principal_from_token(session, token=token)


def require(*roles: str, agents: bool = False):
    """Dependency admitting people with one of roles and, when agents=True, edge agents."""
    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
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
