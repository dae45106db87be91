"""HTTP endpoints for login, people and machine authorisations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Form

from server.auth import badge, display, service
from server.auth.deps import ANY_PERSON, require
from server.auth.schemas import (AuthorisationCreate, AuthorisationOut, BadgeIn, DisplayTokenCreate,
                                 DisplayTokenIssued, DisplayTokenOut, MeOut, PasswordChangeIn, RevokeIn, TokenOut,
                                 UserCreate, UserOut, UserUpdate)
from server.db import SessionDep
from server.auth.ratelimit import FailedLogins
from server.errors import COMMON_ERRORS, TooManyRequests, Unauthorized, error_responses
from server.models import DisplayToken, MachineAuthorisation, User
from server.security import Principal

router = APIRouter(tags=["auth and people"], responses=COMMON_ERRORS)

Admin = Annotated[Principal, Depends(require("admin"))]


class LoginForm:
    """The OAuth2 password form (RFC 6749 §4.3) with every field bounded: a megabyte user id is a 422, never a
    record in the audit trail."""

    def __init__(self, username: Annotated[str, Form(min_length=1, max_length=64,
                                                     description="User id, or badge number")],
                 password: Annotated[str, Form(min_length=1, max_length=1024, description="Password, or PIN")],
                 scope: Annotated[str, Form(max_length=64, description="kiosk: badge number and PIN")] = "",
                 grant_type: Annotated[str | None, Form(pattern="^password$", max_length=8)] = None,
                 client_id: Annotated[str | None, Form(max_length=64)] = None,
                 client_secret: Annotated[str | None, Form(max_length=256)] = None):
        self.username, self.password, self.scopes = username, password, scope.split()
        self.grant_type, self.client_id, self.client_secret = grant_type, client_id, client_secret
Trainer = Annotated[Principal, Depends(require("production_manager", "quality_engineer", "admin"))]


@router.post("/auth/token", response_model=TokenOut, responses=error_responses(401, 429))
def login(request: Request, session: SessionDep, form: Annotated[LoginForm, Depends()]) -> TokenOut:
    """OAuth2 password flow: user id and password, or with scope=kiosk badge number and PIN (shorter token).
    Too many failures from one address in a minute answer 429."""
    limiter: FailedLogins = request.app.state.failed_logins
    client = request.client.host if request.client else "unknown"
    wait = limiter.retry_after(client)
    if wait is not None:
        raise TooManyRequests(f"Too many failed logins from this address; try again in {wait} s",
                              retry_after_s=wait)
    try:
        return _login(session, form)
    except Unauthorized:
        limiter.failed(client)
        raise


def _login(session, form: LoginForm) -> TokenOut:
    if badge.KIOSK_SCOPE in form.scopes:
        user = badge.authenticate_badge(session, badge_number=form.username, pin=form.password)
        token, lifetime = service.issue_access_token(session, user=user, minutes=badge.kiosk_settings().token_minutes,
                                                     method="badge_pin")
        return TokenOut(access_token=token, expires_in=lifetime)
    user = service.authenticate(session, username=form.username, password=form.password)
    token, lifetime = service.issue_access_token(session, user=user)
    return TokenOut(access_token=token, expires_in=lifetime, password_change_required=user.must_change_password)


@router.post("/auth/logout", status_code=204, responses=error_responses(401))
def logout(session: SessionDep, actor: Annotated[Principal, Depends(require(*ANY_PERSON, kiosk=True))]) -> None:
    """End every session of yours: all your access tokens stop working."""
    service.logout(session, actor=actor)


@router.post("/auth/password", response_model=TokenOut, responses=error_responses(401, 409))
def change_password(body: PasswordChangeIn, session: SessionDep,
                    actor: Annotated[Principal, Depends(require(*ANY_PERSON))]) -> TokenOut:
    """Change your own password; your other sessions end, and the answer is a new token for this one."""
    user = service.change_password(session, actor=actor, **body.model_dump())
    token, lifetime = service.issue_access_token(session, user=user)
    return TokenOut(access_token=token, expires_in=lifetime)


@router.get("/auth/me", response_model=MeOut)
def me(principal: Annotated[Principal, Depends(require(*ANY_PERSON, agents=True, kiosk=True))]) -> MeOut:
    """Who the token belongs to."""
    return MeOut(kind=principal.kind, id=principal.id, name=principal.name, full_name=principal.full_name,
                 role=principal.role, machine_ids=sorted(principal.machine_ids))


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, session: SessionDep, actor: Admin) -> User:
    """Create a person with a role (admin)."""
    return service.create_user(session, actor=actor, temporary=True, **body.model_dump())


@router.get("/users", response_model=list[UserOut])
def list_users(session: SessionDep, actor: Trainer) -> list[User]:
    """All people, including deactivated ones."""
    return service.list_users(session)


@router.patch("/users/{user_id}", response_model=UserOut)
def update_user(user_id: int, body: UserUpdate, session: SessionDep, actor: Admin) -> User:
    """Change role, deactivate/reactivate or unlock a person (admin, with reason)."""
    return service.update_user(session, actor=actor, user_id=user_id, **body.model_dump())


@router.put("/users/{user_id}/badge", response_model=UserOut)
def set_badge(user_id: int, body: BadgeIn, session: SessionDep, actor: Admin) -> User:
    """Give a person a kiosk badge number and PIN (admin); the PIN is stored only as a hash."""
    user = service.get_user(session, user_id=user_id)
    return badge.set_badge(session, actor=actor, user=user, badge_number=body.badge_number, pin=body.pin)


@router.post("/users/{user_id}/machine-authorisations", response_model=AuthorisationOut, status_code=201)
def authorise(user_id: int, body: AuthorisationCreate, session: SessionDep,
              actor: Trainer) -> MachineAuthorisation:
    """Authorise a trained person to operate a machine."""
    return service.authorise_on_machine(session, actor=actor, user_id=user_id, **body.model_dump())


@router.get("/users/{user_id}/machine-authorisations", response_model=list[AuthorisationOut])
def list_authorisations(user_id: int, session: SessionDep, actor: Trainer) -> list[MachineAuthorisation]:
    """A person's machine authorisations, current and withdrawn."""
    return service.authorisations_of(session, user_id=user_id)


@router.post("/machine-authorisations/{authorisation_id}/revoke", response_model=AuthorisationOut)
def revoke(authorisation_id: int, body: RevokeIn, session: SessionDep, actor: Trainer) -> MachineAuthorisation:
    """Withdraw a machine authorisation (kept in history)."""
    return service.revoke_authorisation(session, actor=actor, authorisation_id=authorisation_id,
                                        reason=body.reason)


DisplayManager = Annotated[Principal, Depends(require("production_manager", "admin"))]


@router.post("/display-tokens", response_model=DisplayTokenIssued, status_code=201)
def create_display_token(body: DisplayTokenCreate, session: SessionDep, actor: DisplayManager) -> DisplayTokenIssued:
    """Create read-only live-dashboard access for a wall display; the secret is shown once."""
    row, token = display.create(session, actor=actor, label=body.label)
    return DisplayTokenIssued(**DisplayTokenOut.model_validate(row).model_dump(), token=token,
                              url=f"/ui/wall#token={token}")


@router.get("/display-tokens", response_model=list[DisplayTokenOut])
def list_display_tokens(session: SessionDep, actor: DisplayManager) -> list[DisplayToken]:
    """Every wall-display token, newest first, revoked ones included."""
    return display.list_tokens(session)


@router.post("/display-tokens/{token_id}/revoke", response_model=DisplayTokenOut)
def revoke_display_token(token_id: int, body: RevokeIn, session: SessionDep, actor: DisplayManager) -> DisplayToken:
    """Withdraw a wall display's access: its live stream ends and it is refused from then on."""
    return display.revoke(session, actor=actor, token_id=token_id, reason=body.reason)
