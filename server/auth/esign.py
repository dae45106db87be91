"""Electronic signatures (21 CFR 11.50, 11.200): re-authentication with the signer's password or kiosk PIN, then a
sealed signature row bound to the record's hash and its entry in the audit chain.

In the auth package, not the audit package: the credential check (lockout, the pre-check made before the request's
transaction) is auth's; the chain and the signature seal it writes to are audit's, which builds on nothing above it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from server.audit.service import MEANINGS, record, settings_of, signature_fields
from server.auth import guard, signing
from server.auth.badge import pin_matches
from server.errors import Conflict, Forbidden
from server.models import Signature, User, utcnow
from server.security import Principal, password_matches, seal


def sign(session: Session, *, signer: Principal, password: str, meaning: str, record_type: str,
         record_id: Any, record_sha256: str, allowed_roles: tuple[str, ...] | None = None,
         credential: str = "password") -> Signature:
    """Apply an electronic signature after re-authentication with the signer's password (or, at a kiosk
    where the person logged in with their badge, their PIN: credential="pin"; P11 11.200(a)(1)(i))."""
    if signer.kind != "user":
        raise Forbidden("Only a person can sign electronically", code="signature_needs_person")
    if meaning not in MEANINGS:
        raise Conflict(f"Signature meaning must be one of {', '.join(MEANINGS)}", code="signature_meaning")
    if allowed_roles is not None and signer.role not in allowed_roles:
        raise Forbidden(f"A {signer.role} may not sign this {record_type.replace('_', ' ')} as {meaning}; "
                        f"allowed: {', '.join(allowed_roles)}", code="signature_role")
    user = session.get(User, signer.id)
    settings = settings_of(session)
    now = utcnow()
    if user is not None and user.must_change_password:
        raise Conflict("Not signed: change the password an administrator set for you first (POST /auth/password); "
                       "until then nobody but you may know your signature", code="password_change_required")
    checked = None if user is None else signing.take(session, user_id=user.id, credential=credential,
                                                          secret=password)
    if checked is not None:
        # Checked before this transaction began (server.auth.signing): attempt taken, counted and settled there.
        locked, matches = checked.outcome == "locked", checked.outcome == "ok"
    else:
        # Not through a signing route (the CLI, a test's session): checked here, counted after the check.
        locked = user is not None and guard.is_locked(user, now)
        if credential == "pin":
            matches = user is not None and not locked and pin_matches(session, user=user, pin=password)
        else:
            matches = user is not None and not locked and password_matches(settings, user.password_hash, password)
    if user is None or not user.active or not matches:
        # Whatever the caller added for this record (a manual step, an assessment) goes with the refusal: only
        # the refusal's audit entry is committed (keep_audit), never an unsigned record.
        session.rollback()
        what = "PIN" if credential == "pin" else "password"
        if user is not None and not locked and checked is None:
            # A signature is a credential check like a login: it counts toward the same lockout (issue 16).
            guard.count_failure(session, user_id=user.id, now=now)
        record(session, actor=signer, action="signature_refused", record_type=record_type, record_id=record_id,
               new={"meaning": meaning, "why": "account locked" if locked else f"{what} did not match"})
        if locked:
            raise Conflict("Not signed: the account is locked for a while after repeated failed attempts",
                           code="account_locked", keep_audit=True)
        if credential == "pin":
            raise Conflict("Not signed: the PIN is not correct. Enter your PIN again.", code="signature_pin",
                           keep_audit=True)
        raise Conflict("Signature refused: the password is not correct", code="signature_password",
                       keep_audit=True)
    if user.failed_logins:
        user.failed_logins, user.locked_until = 0, None
    sig = Signature(user_id=user.id, printed_name=user.full_name, signer_role=user.role, meaning=meaning,
                    record_type=record_type, record_id=str(record_id), record_sha256=record_sha256,
                    signed_at=utcnow(), seal="")
    sig.seal = seal(settings.audit_key, signature_fields(sig))
    session.add(sig)
    session.flush()
    record(session, actor=signer, action="signed", record_type=record_type, record_id=record_id,
           new={"signature_id": sig.id, "meaning": meaning, "printed_name": sig.printed_name,
                "record_sha256": record_sha256, **({"credential": "badge PIN"} if credential == "pin" else {})})
    return sig
