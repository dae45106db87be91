"""The credential given to sign is checked before the request writes anything (issue 16).

Argon2 takes ~100 ms by design. Checked inside the request's write transaction (where `sign()` is reached, after the
record to sign was written), it held SQLite's only write lock that long for every signature, and on PostgreSQL a
burst of parallel wrong signatures was counted only after each check, so it could exceed the lockout by the number
of requests in flight. The check runs first, like a login: it takes one credential attempt under the row
lock in a short transaction of its own (`guard.reserve_attempt`), checks the password or PIN with no transaction
open, settles the count, and leaves the outcome for `sign()`, which then only compares a digest of the secret.

`server.auth.deps.precheck_signature` runs it on every route of the routers that sign (app.py) and does nothing unless
a person sends a JSON body with a `password` or `pin`: the field every signing request model carries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy.orm import Session

from server.audit.service import settings_of
from server.auth import guard
from server.models import User, utcnow

_CHECK = "amtrace_signature_check"


@dataclass(frozen=True)
class SignatureCheck:
    """The outcome of the credential check made before the request's transaction: ok, wrong or locked."""

    user_id: int
    credential: str
    digest: str
    outcome: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check_before_writing(session: Session, *, user_id: int, credential: str, secret: str) -> SignatureCheck:
    """Take an attempt, check the secret outside any transaction, settle the count; remembered for sign()."""
    taken = guard.reserve_attempt(session, user_id=user_id, now=utcnow())  # commits; no transaction after it
    user = session.get(User, user_id)
    secret_hash = None if user is None else (user.pin_hash if credential == "pin" else user.password_hash)
    if session.in_transaction():
        session.commit()  # no transaction (and on SQLite no lock) is open while Argon2 runs
    ok = guard.check_secret(settings_of(session), secret_hash if taken else None, secret) and taken
    if taken:
        guard.settle(session, user_id=user_id, ok=ok)
        session.commit()
    check = SignatureCheck(user_id, credential, _digest(secret), "ok" if ok else ("wrong" if taken else "locked"))
    session.info[_CHECK] = check
    return check


def take(session: Session, *, user_id: int, credential: str, secret: str) -> SignatureCheck | None:
    """The check made before this request's transaction for exactly this person and secret, once; else None."""
    check = session.info.pop(_CHECK, None)
    if check is not None and (check.user_id, check.credential, check.digest) == (user_id, credential,
                                                                                 _digest(secret)):
        return check
    return None
