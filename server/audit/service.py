"""Append-only hash-chained audit trail; signature seals and the registries of what `audit verify` rechecks."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from server.models import AuditEntry, Signature, utcnow
from server.security import Principal, canonical_json, seal
from server.settings import Settings

GENESIS = "0" * 64
MEANINGS = ("authored", "reviewed", "approved", "performed")
# session.info key: seals of rows whose stored content the caller already knows (server.audit.rows.seal_known),
# carried by the next entry record() writes instead of a rows_sealed entry of their own.
PRESEALED = "amtrace_rows_presealed"
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

def entry_fields(e: AuditEntry) -> dict[str, Any]:
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
    presealed = session.info.pop(PRESEALED, None)
    if presealed:
        new = {**(new or {}), "rows_sealed": presealed}
    lock_chain(session)
    conn = session.connection()
    head_seq, prev = _head(session)
    entry = AuditEntry(seq=head_seq + 1, at=utcnow(), actor=actor.actor, user_id=actor.user_id, action=action,
                       record_type=record_type, record_id=str(record_id),
                       old_values=canonical_json(old or {}), new_values=canonical_json(new or {}),
                       reason=reason, prev_hash=prev, entry_hash="")
    # Round to what every database keeps (microseconds) before hashing.
    entry.entry_hash = seal(settings_of(session).audit_key, entry_fields(entry))
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

# Each returns (what, path, sha256) of the files its domain keeps in the file store under a recorded hash.
STORED_FILES: list[Callable[[Session], Iterable[tuple[str, Path, str]]]] = []

def register_stored_files(fn: Callable[[Session], Iterable[tuple[str, Path, str]]]):
    """Decorator: declare files a domain keeps by SHA-256, so `audit verify` checks their bytes."""
    STORED_FILES.append(fn)
    return fn

def signature_fields(s: Signature) -> dict[str, Any]:
    return {"user_id": s.user_id, "printed_name": s.printed_name, "signer_role": s.signer_role,
            "meaning": s.meaning, "record_type": s.record_type, "record_id": s.record_id,
            "record_sha256": s.record_sha256, "signed_at": _iso(s.signed_at)}

def check_signature(session: Session, key: str, sig: Signature) -> list[ChainBreak]:
    who = f"signature {sig.id} ({sig.meaning} by {sig.printed_name})"
    if not hmac.compare_digest(seal(key, signature_fields(sig)), sig.seal):
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
    return not check_signature(session, settings_of(session).audit_key, sig)

def seal_is_intact(session: Session, sig: Signature) -> bool:
    """True when the signature row is as it was signed (not edited or moved); no record rehash."""
    return hmac.compare_digest(seal(settings_of(session).audit_key, signature_fields(sig)), sig.seal)


CASE_READS = ("case_read", "case_data_read")


def review_entries(session: Session, *, actor: Principal, record_type: str | None, record_id: str | None,
                   after_seq: int, limit: int) -> list[AuditEntry]:
    """Entries after after_seq (optionally of one record) for review; reading case entries is audited."""
    q = select(AuditEntry).where(AuditEntry.seq > after_seq)
    if record_type:
        q = q.where(AuditEntry.record_type == record_type)
    if record_id:
        q = q.where(AuditEntry.record_id == record_id)
    entries = list(session.scalars(q.order_by(AuditEntry.seq).limit(limit)))
    # Entries about cases carry case data (pseudonym, clinician, surgery date): reading them is a read of the
    # case, audited like GET /cases/{id} (R11). Read entries themselves carry only ids, so polling stays quiet.
    cases = sorted({e.record_id for e in entries if e.record_type == "case" and e.action not in CASE_READS},
                   key=lambda c: int(c) if c.isdigit() else 0)
    if cases:
        record(session, actor=actor, action="case_data_read", record_type="case",
               record_id=",".join(cases)[:64], new={"via": "audit trail", "cases": cases})
    return entries


def signatures_on(session: Session, *, record_type: str, record_id: str) -> list[Signature]:
    """Every signature on one record, in signing order."""
    return list(session.scalars(select(Signature).where(Signature.record_type == record_type,
                                                        Signature.record_id == record_id).order_by(Signature.id)))
