"""Every credential check goes through here: the password login, the kiosk's badge + PIN login and the password or
PIN given again to sign (issue 16). One counter per person, whichever door was knocked on.

- **Exactly the limit is checked, even in parallel.** A login takes its attempt before the (slow) Argon2 check, in
  a short transaction of its own under a row lock (PostgreSQL `FOR UPDATE`; SQLite's one writer), so 50 parallel
  wrong guesses check 5 passwords and refuse the rest as locked; no write transaction is open while Argon2 runs.
- **A lockout ends by itself.** At the limit the account is locked for `lockout_s`; each further failure after a
  lockout doubles it, up to `lockout_max_s`. An administrator can unlock at once. Locking also revokes the
  person's access tokens.
- **Nothing tells an account apart.** Unknown user ids and badges, deactivated and locked accounts and wrong
  passwords get the same answer, after the same work (an Argon2 check against a dummy hash where there is no
  real one), so neither the words nor the time say whether an account exists or is locked.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server.audit.service import lock_chain, settings_of
from server.models import User, utcnow
from server.security import hash_password, password_matches
from server.settings import Settings

LOGIN_REFUSED = "User id or password is not correct, or the account is locked for a while after repeated failures"
MAX_SECRET = 1024  # characters: a longer "password" is an attack on the hashing, not a password
BADGE_REFUSED = "Badge or PIN is not correct, or the account is locked for a while after repeated failures"


_DUMMY_HASHES: dict[tuple[int, int, int], str] = {}


def dummy_hash(settings: Settings) -> str:
    """A hash nobody knows the password of, with the deployment's Argon2 cost: checked where an account has none."""
    cost = (settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)
    if cost not in _DUMMY_HASHES:
        _DUMMY_HASHES[cost] = hash_password(settings, secrets.token_urlsafe(24))
    return _DUMMY_HASHES[cost]


def is_locked(user: User, now: datetime) -> bool:
    """True while the person's lockout lasts."""
    return user.locked_until is not None and user.locked_until > now


def lock_seconds(settings: Settings, failures: int) -> float:
    """How long the account is locked after this many consecutive failures (0 below the limit)."""
    over = failures - settings.max_failed_logins
    return 0.0 if over < 0 else min(settings.lockout_s * 2 ** over, settings.lockout_max_s)


def reserve_attempt(session: Session, *, user_id: int, now: datetime) -> bool:
    """Take one credential attempt on the account, counted as failed until settle() says otherwise, in a short
    transaction of its own; False (nothing taken) when the account is inactive or locked."""
    settings = settings_of(session)
    if session.in_transaction():
        session.commit()
    # populate_existing: the row as it is now, not as this session read it before (another request may have
    # taken an attempt since).
    user = session.scalar(select(User).where(User.id == user_id).with_for_update()
                          .execution_options(populate_existing=True))
    allowed = user is not None and user.active and not is_locked(user, now)
    if allowed:
        user.failed_logins += 1
        if user.failed_logins >= settings.max_failed_logins:
            # Locked from now, should this attempt fail too: parallel attempts find it locked.
            user.locked_until = now + timedelta(seconds=lock_seconds(settings, user.failed_logins))
    session.commit()
    return allowed


def settle(session: Session, *, user_id: int, ok: bool) -> None:
    """After the check: a success clears the count and the lockout; a failure that locked the account revokes the
    person's access tokens (the count is already taken)."""
    if ok:
        session.execute(update(User).where(User.id == user_id).values(failed_logins=0, locked_until=None))
        return
    user = session.get(User, user_id)
    if user is not None:
        session.refresh(user)  # the count as reserve_attempt left it
    if user is not None and user.failed_logins == settings_of(session).max_failed_logins:
        # The token version is sealed: its commit appends to the audit chain. Chain lock first, then the row, the
        # order every recording request takes; row first deadlocked against a signature being recorded (PostgreSQL).
        lock_chain(session)
        session.refresh(user)
        user.token_version += 1  # locked for the first time in this run of failures: end its sessions


def count_failure(session: Session, *, user_id: int, now: datetime) -> int:
    """A failed check that took no attempt first (a signature, inside the request's own transaction): count it
    in one statement, lock at the limit; the new count."""
    settings = settings_of(session)
    session.execute(update(User).where(User.id == user_id).values(failed_logins=User.failed_logins + 1))
    user = session.get(User, user_id)
    session.refresh(user, ["failed_logins", "locked_until", "token_version"])
    if user.failed_logins >= settings.max_failed_logins:
        user.locked_until = now + timedelta(seconds=lock_seconds(settings, user.failed_logins))
        if user.failed_logins == settings.max_failed_logins:
            user.token_version += 1
    return user.failed_logins


def check_secret(settings: Settings, secret_hash: str | None, secret: str) -> bool:
    """Argon2 check of secret; against the dummy hash when there is no real one (the same work either way). A
    secret longer than any password (MAX_SECRET) is refused unread."""
    if len(secret) > MAX_SECRET:
        return False
    return password_matches(settings, secret_hash or dummy_hash(settings), secret) and secret_hash is not None


def check_login(session: Session, *, user: User | None, secret_hash: str | None, secret: str) -> tuple[bool, str]:
    """A login's credential check: (ok, why not for the audit trail). The session must not be in a write
    transaction (this commits its own short ones)."""
    settings, now = settings_of(session), utcnow()
    if user is None:
        check_secret(settings, None, secret)
        return False, "unknown"
    taken = reserve_attempt(session, user_id=user.id, now=now)
    ok = check_secret(settings, secret_hash if taken else None, secret) and taken
    if taken:
        settle(session, user_id=user.id, ok=ok)
    if ok:
        return True, ""
    if not user.active:
        return False, "account deactivated"
    return False, "wrong secret" if taken else "account locked"
