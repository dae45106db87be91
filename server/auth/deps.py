"""FastAPI dependencies: authenticate the caller and check its role (people) or scope (agents)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer
from sqlalchemy.orm import Session

from server.agents.service import principal_for_token as agent_principal
from server.auth import display, signing
from server.auth.service import principal_from_token, token_claims
from server.db import SessionDep, begin_read, end_read_transaction
from server.errors import Forbidden, Unauthorized
from server.security import AGENT_TOKEN_PREFIX, DISPLAY_ROLE, DISPLAY_TOKEN_PREFIX, Principal

oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False,
                                     description="People: OAuth2 password flow, short-lived JWT")
agent_scheme = HTTPBearer(auto_error=False, scheme_name="AgentToken",
                          description="Edge agents: `Authorization: Bearer amtagent_…` issued by an admin")


def authenticate(session: Session, token: str | None, *, then_write: bool = False) -> Principal:
    """The caller a bearer token stands for (person or agent), read in a transaction of its own.

    then_write: leave that read transaction open for the caller's own reads, which it ends with
    server.db.start_writing before it writes (the release gate; see begin_read).
    """
    if not token:
        raise Unauthorized("Not authenticated: send Authorization: Bearer <token>", code="not_authenticated")
    if not session.in_transaction():
        # Reading who is asking takes no write lock (SQLite), so it never waits behind a writer.
        begin_read(session, then_write=then_write)
    if token.startswith(AGENT_TOKEN_PREFIX):
        principal = agent_principal(session, token=token)
    elif token.startswith(DISPLAY_TOKEN_PREFIX):
        principal = display.principal_for_token(session, token=token)
    else:
        principal = principal_from_token(session, token=token)
    if not then_write:
        # The endpoint may run in another worker thread: end this read here so nothing is held meanwhile.
        end_read_transaction(session)
    return principal


def current_principal(session: SessionDep, user_token: Annotated[str | None, Depends(oauth2_scheme)],
                      agent_cred: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_scheme)]
                      ) -> Principal:
    """The authenticated caller, person or agent."""
    return authenticate(session, user_token or (agent_cred.credentials if agent_cred else None))


def admit(principal: Principal, roles: tuple[str, ...], agents: bool, kiosk: bool = False) -> Principal:
    """The principal, if its role (people) or kind (agents) may use an endpoint guarded by roles/agents; a kiosk
    session (badge and PIN) only where kiosk=True."""
    if principal.kiosk and not kiosk:
        raise Forbidden("A kiosk session (badge and PIN) may do kiosk actions only: scan, start, sign a step, "
                        "report a problem. Log in with your password for this", code="kiosk_session")
    if principal.kind == "agent":
        if agents:
            return principal
        raise Forbidden("Edge agents may not use this endpoint", code="agent_not_allowed")
    if principal.role in roles:
        return principal
    raise _role_refused(principal.role, roles)


def _role_refused(role: str | None, roles: tuple[str, ...]) -> Forbidden:
    allowed = ", ".join(roles) if roles else "edge agents only"
    return Forbidden(f"Role {role} may not do this; allowed: {allowed}", code="role_not_allowed")


def require(*roles: str, agents: bool = False, kiosk: bool = False):
    """Dependency admitting people with one of roles and, when agents=True, edge agents; kiosk=True: also a kiosk
    session (badge and PIN), which is refused everywhere else."""
    # async: a pure check, run on the event loop instead of costing the request another thread hop.
    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return admit(principal, roles, agents, kiosk)
    check.allowed_roles = roles  # read by the role × endpoint matrix test
    check.allows_agents = agents
    check.allows_kiosk = kiosk
    return check


class Credentials:
    """A request's bearer token and the roles its endpoint admits, checked later with check()."""

    def __init__(self, token: str | None, roles: tuple[str, ...], agents: bool) -> None:
        self.token, self.roles, self.agents = token, roles, agents

    def check(self, session: Session, *, then_write: bool = False) -> Principal:
        """Authenticate and admit, in the caller's thread and session (see authenticate for then_write)."""
        return admit(authenticate(session, self.token, then_write=then_write), self.roles, self.agents)


def require_later(*roles: str, agents: bool = False):
    """Like require(), but only reads the token: the endpoint calls .check(session) in its own thread.

    For the hot path (the release gate): authentication and the work then run in one worker thread,
    instead of a thread hop each for the session, the authentication and the endpoint.
    """
    async def credentials(request: Request, user_token: Annotated[str | None, Depends(oauth2_scheme)],
                          agent_cred: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_scheme)]
                          ) -> Credentials:
        token = user_token or (agent_cred.credentials if agent_cred else None)
        # What needs no database is refused here, before the body is read (401/403 before 422, as with
        # require()): no token, a bad or expired access token, a role not admitted, an agent where none is.
        if not token:
            raise Unauthorized("Not authenticated: send Authorization: Bearer <token>", code="not_authenticated")
        if token.startswith(AGENT_TOKEN_PREFIX):
            if not agents:
                raise Forbidden("Edge agents may not use this endpoint", code="agent_not_allowed")
        elif token.startswith(DISPLAY_TOKEN_PREFIX):
            raise _role_refused(DISPLAY_ROLE, roles)
        else:
            role = token_claims(request.app.state.settings, token).get("role")
            if role not in roles:
                raise _role_refused(role, roles)
        return Credentials(token, roles, agents)
    credentials.allowed_roles = roles  # read by the role × endpoint matrix test
    credentials.allows_agents = agents
    return credentials


def require_machine_scope(principal: Principal, machine_id: str) -> None:
    """Refuse an agent acting for a machine outside its scope (people are checked by role)."""
    if principal.kind == "agent" and machine_id not in principal.machine_ids:
        raise Forbidden(f"Agent {principal.name} is not scoped to machine {machine_id}", code="agent_scope")


ANY_PERSON = ("operator", "production_manager", "quality_engineer", "design_engineer", "clinician", "admin")


async def precheck_signature(request: Request, session: SessionDep,
                             principal: Annotated[Principal, Depends(current_principal)]) -> None:
    """Check a signing request's password or PIN before the endpoint runs (no-op for other requests)."""
    if principal.kind != "user" or request.method not in ("POST", "PUT", "PATCH"):
        return
    if "application/json" not in request.headers.get("content-type", ""):
        return
    try:
        body = json.loads(await request.body())
    except ValueError:
        return  # the endpoint's own validation answers 422
    if not isinstance(body, dict):
        return
    for field, credential in (("pin", "pin"), ("password", "password")):
        secret = body.get(field)
        if isinstance(secret, str) and secret:
            await run_in_threadpool(signing.check_before_writing, session, user_id=principal.id, credential=credential,
                                    secret=secret)
            return


def scrape_or_admin(request: Request, session: SessionDep) -> None:
    """Admit Prometheus with the scrape token (AMTRACE_METRICS_TOKEN, constant-time comparison) or an administrator."""
    import hmac

    authorization = request.headers.get("authorization") or ""
    scheme, _, token = authorization.partition(" ")
    expected = request.app.state.settings.metrics_token
    if expected and scheme == "Bearer" and hmac.compare_digest(token.encode(), expected.encode()):
        return
    admit(authenticate(session, token or None), ("admin",), agents=False)


scrape_or_admin.allowed_roles = ("admin",)  # read by the role × endpoint matrix test
scrape_or_admin.allows_agents = False
scrape_or_admin.allows_kiosk = False
