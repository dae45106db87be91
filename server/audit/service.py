"""Append-only hash-chained audit trail and electronic signatures bound to record hashes."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from server.audit import rows
from server.audit.anchors import anchored_time, key_fingerprint, read_anchors
from server.errors import Conflict, Forbidden
from server.models import AuditEntry, Signature, User, utcnow
from server.security import Principal, canonical_json, password_matches, seal
from server.settings import Settings

GENESIS = "0" * 64
MEANINGS = ("authored", "reviewed", "approved", "performed")
_CHAIN_LOCK = 0x616D7472  # "amtr": PostgreSQL advisory lock id that serialises appends to the chain

# record_type -> function(session, record_id) -> current content hash of that record, or None when gone.
RECORD_HASHERS: dict[str, Callable[[Session, str], str | None]] = {}


def settings_of(session: Session) -> Settings:
    """The settings attached to the session by server.db.make_sessionmaker."""
    return session.info["settings"]


def register_record_hasher(record_type: str):
    """Decorator: declare how to recompute the hash of a signable record type."""
    def wrap(fn: Callable[[Session, str], str | None]):
        RECORD_HASHERS[record_type] = fn
        return fn
    return wrap


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def _entry_fields(e: AuditEntry) -> dict[str, Any]:
    return {"seq": e.seq, "at": _iso(e.at), "actor": e.actor, "user_id": e.user_id, "action": e.action,
            "record_type": e.record_type, "record_id": e.record_id, "old_values": e.old_values,
            "new_values": e.new_values, "reason": e.reason, "prev_hash": e.prev_hash}


# Prepared once: the head of the chain (last entry by seq, the primary key: one index step, O(1)).
_HEAD = select(AuditEntry.seq, AuditEntry.entry_hash).order_by(AuditEntry.seq.desc()).limit(1)
_CHAIN_LOCK_SQL = text("SELECT pg_advisory_xact_lock(:k)")
_APPEND = AuditEntry.__table__.insert()


def _innermost(session: Session):
    """The transaction a rollback would end first: the innermost savepoint, else the transaction."""
    return session.get_nested_transaction() or session.get_transaction()


def lock_chain(session: Session) -> None:
    """Become the only appender to the chain until this transaction ends (what record() does first)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # Serialise appenders across server instances until this transaction ends. SQLite needs
        # nothing: server.db begins every write transaction IMMEDIATE, so writers are already one at a time.
        # Once per savepoint or transaction (a round trip each): rolling back to a savepoint releases
        # a lock taken inside it (the kiosk's gate preview does), so the outer transaction locks again.
        transaction = _innermost(session)
        if session.info.get("chain_locked_by") is not transaction:
            conn.execute(_CHAIN_LOCK_SQL, {"k": _CHAIN_LOCK})
            session.info["chain_locked_by"] = transaction


# changed: the first entry after seq that is not one of the ignored actions, or NULL. A scalar subquery
# in seq order, not EXISTS: PostgreSQL strips ORDER BY/LIMIT from an EXISTS, and then, without fresh
# statistics on a growing table, its planner took a sequential scan for "seq > …" (a third of the rows,
# it assumes), which read the whole chain on every gate decision. In seq order the primary-key index
# is the only cheap way to the first row.
_LATER = AuditEntry.__table__.alias("later")
_HEAD_AND_CHANGE = (select(AuditEntry.seq, AuditEntry.entry_hash, select(_LATER.c.seq).where(
    _LATER.c.seq > bindparam("seq"), _LATER.c.action.not_in(bindparam("ignore", expanding=True)))
    .order_by(_LATER.c.seq).limit(1).scalar_subquery().label("changed"))
    .order_by(AuditEntry.seq.desc()).limit(1))
# The lock and the same question for PostgreSQL in psycopg's parameter style, sent in one pipeline.
_PG_CHAIN_LOCK = "SELECT pg_advisory_xact_lock(%(k)s)"
_PG_HEAD_AND_CHANGE = ("SELECT seq, entry_hash, (SELECT later.seq FROM audit_entries AS later "
                       "WHERE later.seq > %(seq)s AND later.action <> ALL(%(ignore)s) ORDER BY later.seq LIMIT 1) "
                       "AS changed FROM audit_entries ORDER BY seq DESC LIMIT 1")


def changed_since(session: Session, seq: int, *, ignore: tuple[str, ...] = ()) -> bool:
    """True when an entry after seq, other than the actions in ignore, is in the chain; takes the chain lock.

    Every change to a record is appended to the chain in the transaction that makes it, so this tells
    a reader whether what it read at seq is still current. The head it reads on the way saves record()
    a read of its own.
    """
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        # The lock and the read in one round trip (psycopg's pipeline mode): whoever waits for the
        # lock holds up every other appender for each round trip it makes once it has the lock. The
        # read runs after the lock is granted, so in READ COMMITTED it sees every earlier appender's commit.
        driver = conn.connection.driver_connection
        with driver.pipeline():
            if session.info.get("chain_locked_by") is not _innermost(session):
                driver.execute(_PG_CHAIN_LOCK, {"k": _CHAIN_LOCK})
            cursor = driver.execute(_PG_HEAD_AND_CHANGE, {"seq": seq, "ignore": list(ignore)})
        session.info["chain_locked_by"] = _innermost(session)
        row = cursor.fetchone()
        head, changed = ((row[0], row[1]), row[2] is not None) if row else ((0, GENESIS), False)
    else:
        row = conn.execute(_HEAD_AND_CHANGE, {"seq": seq, "ignore": list(ignore) or [""]}).first()
        head, changed = ((row.seq, row.entry_hash), row.changed is not None) if row else ((0, GENESIS), False)
    _remember_head(session, head)
    return changed


def _remember_head(session: Session, head: tuple[int, str]) -> None:
    # Valid while the chain lock is held and until this transaction or savepoint ends: nobody else
    # can append meanwhile, and every append of this session goes through record().
    session.info["chain_head"] = (_innermost(session), head)


def _head(session: Session) -> tuple[int, str]:
    """(seq, entry_hash) of the last entry (0, GENESIS for an empty chain); call under lock_chain."""
    known = session.info.get("chain_head")
    if known is not None and known[0] is _innermost(session):
        return known[1]
    row = session.connection().execute(_HEAD).first()
    return (row[0], row[1]) if row else (0, GENESIS)


def record(session: Session, *, actor: Principal, action: str, record_type: str, record_id: Any,
           old: dict[str, Any] | None = None, new: dict[str, Any] | None = None,
           reason: str | None = None) -> AuditEntry:
    """Append one entry to the audit trail, chained to the previous one."""
    # Pending changes of the caller go to the database first, so entries follow what they describe.
    session.flush()
    lock_chain(session)
    conn = session.connection()
    head_seq, prev = _head(session)
    entry = AuditEntry(seq=head_seq + 1, at=utcnow(), actor=actor.actor, user_id=actor.user_id, action=action,
                       record_type=record_type, record_id=str(record_id),
                       old_values=canonical_json(old or {}), new_values=canonical_json(new or {}),
                       reason=reason, prev_hash=prev, entry_hash="")
    # Round to what every database keeps (microseconds) before hashing.
    entry.entry_hash = seal(settings_of(session).audit_key, _entry_fields(entry))
    # A plain INSERT on the session's connection (same transaction): the entry is never changed
    # afterwards, so the unit of work has nothing to track; the returned object is not in the session.
    conn.execute(_APPEND, {c: getattr(entry, c) for c in _ENTRY_COLUMNS})
    _remember_head(session, (entry.seq, entry.entry_hash))
    # The seal of the rows this transaction wrote (server.audit.rows) is appended in the name of the last actor.
    session.info["last_actor"] = actor
    return entry


_ENTRY_COLUMNS = tuple(c.key for c in AuditEntry.__table__.columns)


@dataclass
class ChainBreak:
    """Where and why the chain or a signature fails verification."""

    seq: int | None
    problem: str
    signature_id: int | None = None


@dataclass
class VerificationReport:
    """Result of verifying the audit chain and every signature."""

    entries_checked: int = 0
    signatures_checked: int = 0
    rows_checked: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    breaks: list[ChainBreak] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was found broken."""
        return not self.breaks


def verify(session: Session, *, expect_head: str | None = None,
           anchor_file: str | None = None) -> VerificationReport:
    """Walk the chain, every signature, every sealed row and stored file; report each place where stored data no
    longer matches (anchor_file: the chain heads written outside the database; default from the settings)."""
    import server.registry  # noqa: F401 - registers the record hashers of every domain

    settings = settings_of(session)
    key = settings.audit_key
    report = VerificationReport()
    anchors, anchor_problems = read_anchors(anchor_file or settings.anchor_path)
    report.breaks.extend(ChainBreak(None, p) for p in anchor_problems)
    anchored = {a.seq for a in anchors}
    hash_at: dict[int, str] = {}
    seals: dict[tuple[str, str], tuple[str | None, int]] = {}  # (table, pk) -> (sha256 or None, entry seq)
    signed: dict[int, int] = {}  # signature id -> seq of its "signed" entry
    altered: list[ChainBreak] = []
    prev_hash, prev_seq = GENESIS, 0
    for e in session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).yield_per(1000):
        report.entries_checked += 1
        if e.seq != prev_seq + 1:
            report.breaks.append(ChainBreak(e.seq, f"entries {prev_seq + 1} to {e.seq - 1} are missing "
                                                   f"(deleted from the database)"))
        elif e.prev_hash != prev_hash:
            report.breaks.append(ChainBreak(e.seq, f"entry {e.seq} does not follow entry {prev_seq}: "
                                                   f"its link to the previous hash is wrong"))
        if not hmac.compare_digest(seal(key, _entry_fields(e)), e.entry_hash):
            altered.append(ChainBreak(e.seq, f"entry {e.seq} ({e.action} {e.record_type} {e.record_id}) "
                                             f"was altered after it was written"))
        if e.action == rows.ACTION:
            for table, pk, sha in rows.sealed_rows(_json_field(e.new_values).get("rows", [])):
                seals[(table, pk)] = (sha, e.seq)
        elif e.action == "signed":
            sig_id = _json_field(e.new_values).get("signature_id")
            if isinstance(sig_id, int):
                signed[sig_id] = e.seq
        if e.seq in anchored:
            hash_at[e.seq] = e.entry_hash
        prev_hash, prev_seq = e.entry_hash, e.seq
    report.head_seq, report.head_hash = prev_seq, prev_hash
    fingerprint = key_fingerprint(key)
    if altered and len(altered) == report.entries_checked:
        # Every entry fails: far likelier a wrong key than an attacker who rewrote all of them.
        anchored_keys = sorted({a.key_fingerprint for a in anchors if a.key_fingerprint} - {fingerprint})
        report.breaks.append(ChainBreak(None, (
            f"the audit key does not match the chain: no entry verifies with this key (fingerprint {fingerprint}"
            + (f"; the anchors were written with {', '.join(anchored_keys)}" if anchored_keys else "")
            + "). Set AMTRACE_AUDIT_KEY to the key the chain was written with; if it is right, every entry was "
              "rewritten")))
        return report
    report.breaks.extend(altered)
    if expect_head and expect_head != prev_hash and not any(
            e for e in [session.scalar(select(AuditEntry).where(AuditEntry.entry_hash == expect_head))]):
        report.breaks.append(ChainBreak(None, "the head recorded earlier is no longer in the chain: "
                                              "entries at the end were deleted or replaced"))
    for a in anchors:
        when = anchored_time(a)
        if a.key_fingerprint and a.key_fingerprint != fingerprint:
            report.breaks.append(ChainBreak(None, f"the anchor of {when} was written with another audit key "
                                                  f"(fingerprint {a.key_fingerprint}, this key {fingerprint})"))
        elif a.seq > report.head_seq:
            report.breaks.append(ChainBreak(a.seq, f"entries {report.head_seq + 1} to {a.seq} are missing: the chain "
                                                   f"ends at entry {report.head_seq} but its head was entry {a.seq} "
                                                   f"on {when} (anchor file line {a.line}); the end was deleted"))
        elif hash_at.get(a.seq) != a.hash:
            report.breaks.append(ChainBreak(a.seq, f"entry {a.seq} is not the entry anchored on {when} (anchor file "
                                                   f"line {a.line}): the chain was rewritten from there"))
    for sig in session.scalars(select(Signature).order_by(Signature.id)):
        report.signatures_checked += 1
        report.breaks.extend(_check_signature(session, key, sig))
        if sig.id not in signed:
            report.breaks.append(ChainBreak(None, f"signature {sig.id} ({sig.meaning} by {sig.printed_name}) has no "
                                                  f"'signed' entry in the audit trail: added outside amtrace", sig.id))
        signed.pop(sig.id, None)
    for sig_id, seq in sorted(signed.items()):
        report.breaks.append(ChainBreak(seq, f"signature {sig_id}, recorded in entry {seq}, is no longer in the "
                                             f"database: the signature row was deleted", sig_id))
    report.rows_checked, row_problems = rows.check_rows(session, seals)
    report.breaks.extend(ChainBreak(seq, problem) for seq, problem in row_problems)
    report.breaks.extend(ChainBreak(None, problem) for problem in _check_stored_files(session))
    return report


def _json_field(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# Each returns (what, path, sha256) of the files its domain keeps in the file store under a recorded hash.
STORED_FILES: list[Callable[[Session], Iterable[tuple[str, Path, str]]]] = []


def register_stored_files(fn: Callable[[Session], Iterable[tuple[str, Path, str]]]):
    """Decorator: declare files a domain keeps by SHA-256, so `audit verify` checks their bytes."""
    STORED_FILES.append(fn)
    return fn


def _check_stored_files(session: Session) -> Iterator[str]:
    for files in STORED_FILES:
        for what, path, sha in files(session):
            try:
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
            except FileNotFoundError:
                yield f"{what}: the stored file {path} is missing"
                continue
            if digest.hexdigest() != sha:
                yield f"{what}: the stored file {path} no longer has its recorded SHA-256 (its bytes were replaced)"


def _signature_fields(s: Signature) -> dict[str, Any]:
    return {"user_id": s.user_id, "printed_name": s.printed_name, "signer_role": s.signer_role,
            "meaning": s.meaning, "record_type": s.record_type, "record_id": s.record_id,
            "record_sha256": s.record_sha256, "signed_at": _iso(s.signed_at)}


def _check_signature(session: Session, key: str, sig: Signature) -> list[ChainBreak]:
    who = f"signature {sig.id} ({sig.meaning} by {sig.printed_name})"
    if not hmac.compare_digest(seal(key, _signature_fields(sig)), sig.seal):
        return [ChainBreak(None, f"{who} was altered or moved to another record", sig.id)]
    hasher = RECORD_HASHERS.get(sig.record_type)
    if hasher is None:
        return [ChainBreak(None, f"{who} is on an unknown record type {sig.record_type}", sig.id)]
    current = hasher(session, sig.record_id)
    if current is None:
        return [ChainBreak(None, f"{who}: signed {sig.record_type} {sig.record_id} no longer exists", sig.id)]
    if current != sig.record_sha256:
        return [ChainBreak(None, f"{who}: {sig.record_type} {sig.record_id} was changed after it was signed",
                           sig.id)]
    return []


def signature_is_intact(session: Session, sig: Signature) -> bool:
    """True when the signature's seal is intact and its record still has the signed hash."""
    return not _check_signature(session, settings_of(session).audit_key, sig)


def seal_is_intact(session: Session, sig: Signature) -> bool:
    """True when the signature row is as it was signed (not edited or moved); no record rehash."""
    return hmac.compare_digest(seal(settings_of(session).audit_key, _signature_fields(sig)), sig.seal)


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
    from server.auth import guard, signing  # the credential guard builds on this module (settings_of)

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
            from server.auth.badge import pin_matches  # the badge module builds on this one

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
    sig.seal = seal(settings.audit_key, _signature_fields(sig))
    session.add(sig)
    session.flush()
    record(session, actor=signer, action="signed", record_type=record_type, record_id=record_id,
           new={"signature_id": sig.id, "meaning": meaning, "printed_name": sig.printed_name,
                "record_sha256": record_sha256, **({"credential": "badge PIN"} if credential == "pin" else {})})
    return sig
