"""People, roles, logins, access tokens and machine authorisations."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.audit.service import record, settings_of
from server.errors import Conflict, NotFound, Unauthorized
from server.models import Agent, Machine, MachineAuthorisation, User, utcnow
from server.security import AGENT_TOKEN_PREFIX, ROLES, SYSTEM, Principal, hash_password
from server.settings import Settings
from server.auth import guard
from server.db import begin_read, end_read_transaction, get_or_not_found

JWT_ALGORITHM = "HS256"


def principal_for(user: User, *, kiosk: bool = False) -> Principal:
    """The principal of a user (kiosk: logged in with badge and PIN, so limited to kiosk actions)."""
    return Principal(kind="user", id=user.id, name=user.username, full_name=user.full_name, role=user.role,
                     kiosk=kiosk)


def create_user(session: Session, *, actor: Principal, username: str, full_name: str, role: str,
                password: str, temporary: bool = False) -> User:
    """Create a person; usernames are unique forever (users are deactivated, never deleted).

    temporary: the password was chosen by someone else (an administrator through the API): the person must
    change it before they can sign anything."""
    if role not in ROLES:
        raise Conflict(f"Unknown role {role!r}; roles are {', '.join(ROLES)}", code="unknown_role")
    if len(password) < 10:
        raise Conflict("Password must have at least 10 characters", code="weak_password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict(f"User id {username!r} exists or existed; user ids are never reused",
                       code="username_taken")
    user = User(username=username, full_name=full_name, role=role,
                password_hash=hash_password(settings_of(session), password), must_change_password=temporary)
    session.add(user)
    try:
        session.flush()
    except IntegrityError as e:  # a concurrent create of the same name
        raise Conflict(f"User id {username!r} exists or existed; user ids are never reused",
                       code="username_taken") from e
    record(session, actor=actor, action="user_created", record_type="user", record_id=user.id,
           new={"username": username, "full_name": full_name, "role": role})
    return user


def update_user(session: Session, *, actor: Principal, user_id: int, active: bool | None,
                role: str | None, unlock: bool, reason: str) -> User:
    """Change a user's role or activity, or unlock after failed logins; the reason is recorded."""
    user = get_user(session, user_id=user_id)
    old = {"active": user.active, "role": user.role, "failed_logins": user.failed_logins}
    if role is not None:
        if role not in ROLES:
            raise Conflict(f"Unknown role {role!r}; roles are {', '.join(ROLES)}", code="unknown_role")
        if role != user.role:
            user.token_version += 1  # a token of the old role must not work, nor come back with it
        user.role = role
    if active is not None:
        if not active and user.active:
            user.token_version += 1
        user.active = active
    if unlock:
        user.failed_logins, user.locked_until = 0, None
    record(session, actor=actor, action="user_updated", record_type="user", record_id=user.id, old=old,
           new={"active": user.active, "role": user.role, "failed_logins": user.failed_logins}, reason=reason)
    return user


def get_user(session: Session, *, user_id: int) -> User:
    """The user with this id, or NotFound."""
    return get_or_not_found(session, User, user_id, f"No user with id {user_id}", code="user_not_found")


def authenticate(session: Session, *, username: str, password: str) -> User:
    """Check a login (server/auth/guard.py): every failure counts toward a timed lockout and gets the same answer
    after the same work, whatever the reason; each is recorded with its reason (the user id shortened)."""
    begin_read(session)
    user = session.scalar(select(User).where(User.username == username)) if len(username) <= 64 else None
    end_read_transaction(session)
    ok, why = guard.check_login(session, user=user, secret_hash=user.password_hash if user else None,
                                secret=password)
    if not ok:
        record(session, actor=SYSTEM, action="login_failed", record_type="user",
               record_id=user.id if user else username[:64], new={"why": "unknown user id" if why == "unknown" else
                                                                  "wrong password" if why == "wrong secret" else why})
        raise Unauthorized(guard.LOGIN_REFUSED, code="login_failed", keep_audit=True)
    session.refresh(user)
    return user


def issue_access_token(session: Session, *, user: User, minutes: float | None = None,
                       method: str = "password") -> tuple[str, int]:
    """A signed short-lived JWT for user and its lifetime in seconds (kiosk logins pass a shorter lifetime)."""
    settings = settings_of(session)
    now = utcnow()
    lifetime = timedelta(minutes=minutes or settings.access_token_minutes)
    # amr (RFC 8176): how the person authenticated, so a reader of the token can tell a badge login apart.
    token = jwt.encode({"sub": str(user.id), "role": user.role, "ver": user.token_version, "iat": now,
                        "exp": now + lifetime, "amr": [method]}, settings.secret_key, algorithm=JWT_ALGORITHM)
    return token, int(lifetime.total_seconds())


def token_claims(settings: Settings, token: str) -> dict:
    """The claims of a person's access token whose signature and expiry are valid (no database read)."""
    try:
        return jwt.decode(token, settings.secret_key, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError as e:
        raise Unauthorized("Access token expired; log in again", code="token_expired") from e
    except jwt.PyJWTError as e:
        raise Unauthorized("Access token is not valid", code="token_invalid") from e


def principal_from_token(session: Session, *, token: str) -> Principal:
    """Resolve a bearer token (user JWT or agent token) to the principal it stands for."""
    if token.startswith(AGENT_TOKEN_PREFIX):
        digest = hashlib.sha256(token.encode()).hexdigest()
        agent = session.scalar(select(Agent).where(Agent.token_sha256 == digest))
        if agent is None or agent.revoked_at is not None:
            raise Unauthorized("Agent token is unknown or revoked", code="agent_token_invalid")
        return Principal(kind="agent", id=agent.id, name=agent.name, full_name=f"edge agent {agent.name}",
                         machine_ids=frozenset(m.machine_id for m in agent.machines))
    claims = token_claims(settings_of(session), token)
    user = session.get(User, int(claims["sub"]))
    # Checked on every request so a deactivation, role change, lockout, password change or logout takes effect at
    # once: each raises the account's token version, and a token carries the version it was issued at.
    if (user is None or not user.active or user.role != claims.get("role")
            or claims.get("ver") != user.token_version or guard.is_locked(user, utcnow())):
        raise Unauthorized("Access token no longer valid for this account; log in again", code="token_stale")
    return principal_for(user, kiosk="badge_pin" in claims.get("amr", ()))


def logout(session: Session, *, actor: Principal) -> None:
    """End every session of the caller: their access tokens stop working."""
    user = get_user(session, user_id=actor.id)
    user.token_version += 1
    record(session, actor=actor, action="logged_out", record_type="user", record_id=user.id)


def change_password(session: Session, *, actor: Principal, current_password: str, new_password: str) -> User:
    """The person sets their own password (21 CFR 11.300: nobody else knows it): the current one is checked like a
    login (it counts toward the lockout), every token issued before stops working."""
    begin_read(session)
    user = session.get(User, actor.id)
    end_read_transaction(session)
    ok, why = guard.check_login(session, user=user, secret_hash=user.password_hash, secret=current_password)
    if not ok:
        record(session, actor=actor, action="password_change_refused", record_type="user", record_id=user.id,
               new={"why": "wrong password" if why == "wrong secret" else why})
        raise Unauthorized(guard.LOGIN_REFUSED, code="login_failed", keep_audit=True)
    if len(new_password) < 10:
        raise Conflict("Password must have at least 10 characters", code="weak_password")
    if new_password == current_password:
        raise Conflict("The new password must differ from the current one", code="weak_password")
    session.refresh(user)
    user.password_hash = hash_password(settings_of(session), new_password)
    user.must_change_password = False
    user.token_version += 1
    record(session, actor=actor, action="password_changed", record_type="user", record_id=user.id)
    return user


def authorise_on_machine(session: Session, *, actor: Principal, user_id: int, machine_id: str,
                         training_reference: str, valid_until: date | None) -> MachineAuthorisation:
    """Record that a person is trained and authorised to operate a machine."""
    user = get_user(session, user_id=user_id)
    if session.get(Machine, machine_id) is None:
        raise NotFound(f"No machine {machine_id}", code="machine_not_found")
    auth = MachineAuthorisation(user_id=user.id, machine_id=machine_id, training_reference=training_reference,
                                granted_by=actor.id, valid_until=valid_until)
    session.add(auth)
    session.flush()
    record(session, actor=actor, action="machine_authorisation_granted", record_type="user", record_id=user.id,
           new={"machine_id": machine_id, "training_reference": training_reference,
                "valid_until": valid_until, "authorisation_id": auth.id})
    return auth


def revoke_authorisation(session: Session, *, actor: Principal, authorisation_id: int,
                         reason: str) -> MachineAuthorisation:
    """Withdraw a machine authorisation (kept in history)."""
    auth = session.get(MachineAuthorisation, authorisation_id)
    if auth is None:
        raise NotFound(f"No machine authorisation {authorisation_id}", code="authorisation_not_found")
    if auth.revoked_at is None:
        auth.revoked_at = utcnow()
        record(session, actor=actor, action="machine_authorisation_revoked", record_type="user",
               record_id=auth.user_id, new={"authorisation_id": auth.id, "machine_id": auth.machine_id},
               reason=reason)
    return auth


def list_users(session: Session) -> list[User]:
    """Every user account, active or not."""
    return list(session.scalars(select(User).order_by(User.id)))


def authorisations_of(session: Session, *, user_id: int) -> list[MachineAuthorisation]:
    """A person's machine authorisations, current and withdrawn."""
    return list(session.scalars(select(MachineAuthorisation).where(MachineAuthorisation.user_id == user_id)
                                .order_by(MachineAuthorisation.id)))
