"""Row seals: every regulated row's content hash is written into the audit chain by the transaction that writes it.

The chain's entries are HMAC-sealed, so a row edited, added or deleted in SQL (by anyone who can reach the
database but does not hold the audit key) no longer matches the hash of its latest `rows_sealed` entry, and
`amtrace-server audit verify` names the table, the row and the entry (issue 16: a user's role, a design's
material, a gate decision's verdict or a scope's `valid_until` edited in SQL went unseen before).

How: an `after_flush` listener notes each regulated row the unit of work inserted, changed or deleted; writes
that bypass the unit of work (the gate's plain INSERT of a decision) call `touch()`. Just before the
transaction commits, the noted rows are read back as stored and one `rows_sealed` entry lists
`[table, primary key, sha256 or null when deleted]`. Reading back (rather than hashing what Python holds) makes
the hash exactly what `verify` recomputes later from the same columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Table, event, inspect, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from server.models import Base
from server.audit.service import PRESEALED
from server.security import SYSTEM, canonical_json

ACTION = "rows_sealed"
# Tables whose rows are not regulated records: the chain itself (sealed entry by entry), delivery state of
# notices, and the per-year counter behind device codes (the devices it numbers are sealed). Audit verification
# outcomes are not sealed either: recording one must not append to the chain it has just examined (a broken chain
# is kept exactly as it was found).
UNSEALED_TABLES = frozenset({"audit_entries", "notifications", "device_code_counters", "schema_migrations",
                             "live_machine_states", "audit_verifications"})
# Columns that change as a side effect of use, not as a record: the lockout counter, liveness stamps. They are
# left out of the hash, so a failed login or a heartbeat does not append a seal.
VOLATILE_COLUMNS = {
    "users": frozenset({"failed_logins", "locked_until"}),
    "machines": frozenset({"last_heartbeat_at", "identity_reported_at"}),
    "agents": frozenset({"last_seen_at", "last_status"}),
}
_TOUCHED = "amtrace_rows_touched"  # session.info: {(table, pk): True when it should exist, False when deleted}
_SEALING = "amtrace_rows_sealing"


def sealed_tables() -> list[Table]:
    """Every table whose rows are sealed into the chain, in a stable order."""
    return [t for name, t in sorted(Base.metadata.tables.items()) if name not in UNSEALED_TABLES]


def _pk_columns(table: Table) -> list:
    return list(table.primary_key.columns)


def _pk_text(table: Table, row: Any) -> str:
    """A row's primary key as text: the value, or the values joined by '/' for a composite key."""
    mapping = row._mapping if hasattr(row, "_mapping") else row
    return "/".join(str(mapping[c.key]) for c in _pk_columns(table))


def _with_keys(table: Table, keys: list[tuple]):
    cols = _pk_columns(table)
    if len(cols) == 1:
        return select(table).where(cols[0].in_([k[0] for k in keys]))
    return select(table).where(tuple_(*cols).in_(keys))


def row_sha256(table: Table, row: Any) -> str:
    """SHA-256 of a stored row's regulated columns, as canonical JSON (volatile columns left out)."""
    volatile = VOLATILE_COLUMNS.get(table.name, frozenset())
    mapping = row._mapping if hasattr(row, "_mapping") else row
    values = {c.key: mapping[c.key] for c in table.columns if c.key not in volatile}
    return hashlib.sha256(canonical_json(values).encode()).hexdigest()


def touch(session: Session, table: str, pk: Any, *, exists: bool = True) -> None:
    """Note a row written outside the unit of work (a Core INSERT/UPDATE) so its seal is written at commit.

    pk: the primary key value, or a tuple of them for a composite key."""
    if table not in UNSEALED_TABLES:
        session.info.setdefault(_TOUCHED, {})[(table, pk if isinstance(pk, tuple) else (pk,))] = exists


def seal_known(session: Session, table: str, pk: Any, values: dict[str, Any]) -> None:
    """Seal a row just inserted outside the unit of work from the values written (no read-back), in the next entry
    record() writes: the release gate's decision rides on its own gate_decision entry, hashed before the chain lock
    is taken, so the lock is held no longer than before (a separate seal entry cost PostgreSQL half its decisions/s).
    Only for values that read back exactly as written (UTC datetimes, JSON, text, numbers); verify would say if not."""
    sha = row_sha256(Base.metadata.tables[table], values)
    session.info.setdefault(PRESEALED, []).append([table, str(pk), sha])


def _regulated_change(obj: Any) -> bool:
    state = inspect(obj)
    volatile = VOLATILE_COLUMNS.get(obj.__table__.name, frozenset())
    return any(state.attrs[c.key].history.has_changes() for c in obj.__table__.columns
               if c.key not in volatile and c.key in state.attrs)


def _key(obj: Any) -> Any:
    # Not inspect(obj).identity: new objects get their identity only after the after_flush hooks.
    return tuple(inspect(obj).mapper.primary_key_from_instance(obj))


def _after_flush(session: Session, _context) -> None:
    for obj in session.new:
        touch(session, obj.__table__.name, _key(obj))
    for obj in session.dirty:
        if _regulated_change(obj):
            touch(session, obj.__table__.name, _key(obj))
    for obj in session.deleted:
        touch(session, obj.__table__.name, _key(obj), exists=False)


def _before_commit(session: Session) -> None:
    if session.info.get(_SEALING):
        return
    session.flush()
    touched: dict = session.info.pop(_TOUCHED, None)
    if not touched:
        return
    rows = []
    tables = Base.metadata.tables
    by_table: dict[str, list[tuple]] = {}
    for (name, key) in touched:
        by_table.setdefault(name, []).append(key)
    conn = session.connection()
    for name, keys in sorted(by_table.items()):
        table = tables[name]
        stored = {_pk_text(table, r): row_sha256(table, r) for r in conn.execute(_with_keys(table, keys))}
        for key in keys:
            pk = "/".join(str(v) for v in key)
            if pk in stored:
                rows.append([name, pk, stored[pk]])
            elif not touched[(name, key)]:
                rows.append([name, pk, None])
            # else: inserted in a savepoint that was rolled back, so never stored: nothing to seal.
    if not rows:
        return
    from server.audit.service import record  # the chain service imports this module's ACTION

    session.info[_SEALING] = True
    try:
        record(session, actor=session.info.get("last_actor") or SYSTEM, action=ACTION, record_type="database",
               record_id=len(rows), new={"rows": rows})
    finally:
        session.info.pop(_SEALING, None)


def _after_rollback(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:  # the whole transaction: nothing it noted was stored
        session.info.pop(_TOUCHED, None)


def install(maker: sessionmaker[Session]) -> None:
    """Seal regulated rows into the chain for every session the maker makes."""
    event.listen(maker, "after_flush", _after_flush)
    event.listen(maker, "before_commit", _before_commit)
    event.listen(maker, "after_soft_rollback", _after_rollback)


def sealed_rows(new_values: Iterable[list]) -> Iterator[tuple[str, str, str | None]]:
    """(table, pk, sha256 or None) of one rows_sealed entry's list."""
    for name, pk, sha in new_values:
        yield name, str(pk), sha


def check_rows(session: Session, seals: dict[tuple[str, str], tuple[str | None, int]]
               ) -> tuple[int, list[tuple[int | None, str]]]:
    """Compare every stored regulated row with its latest seal: (rows checked, [(entry seq, problem)])."""
    problems: list[tuple[int | None, str]] = []
    checked = 0
    conn = session.connection()
    by_table: dict[str, dict[str, tuple[str | None, int]]] = {}
    for (name, pk), sealed in seals.items():
        by_table.setdefault(name, {})[pk] = sealed
    for table in sealed_tables():
        table_seals = by_table.pop(table.name, {})
        present = set()
        for r in conn.execute(select(table).order_by(*_pk_columns(table))).yield_per(1000):
            checked += 1
            pk = _pk_text(table, r)
            present.add(pk)
            sealed = table_seals.get(pk)
            what = f"{table.name} row {pk}"
            if sealed is None:
                problems.append((None, f"{what} is in no audit entry: it was added outside amtrace"))
            elif sealed[0] is None:
                problems.append((sealed[1], f"{what} was deleted by entry {sealed[1]} but is back in the database"))
            elif sealed[0] != row_sha256(table, r):
                problems.append((sealed[1], f"{what} was changed outside amtrace: it no longer matches its seal "
                                            f"in entry {sealed[1]}"))
        for pk, (sha, seq) in table_seals.items():
            if sha is not None and pk not in present:
                problems.append((seq, f"{table.name} row {pk} (sealed in entry {seq}) was deleted from the database"))
    for name, table_seals in by_table.items():
        for pk, (_, seq) in table_seals.items():
            problems.append((seq, f"entry {seq} seals {name} row {pk}, a table this server does not seal"))
    return checked, problems


def seal_baseline(session: Session) -> int:
    """Seal every stored regulated row once, in a database written before rows were sealed; returns how many.

    Runs from `amtrace-server migrate`: a chain that already holds a rows_sealed entry is left alone (a row
    missing from it then is one added outside amtrace, which `audit verify` reports)."""
    from server.audit.service import record
    from server.models import AuditEntry

    if session.scalar(select(AuditEntry.seq).where(AuditEntry.action == ACTION).limit(1)) is not None:
        return 0
    conn = session.connection()
    listed = [[t.name, _pk_text(t, r), row_sha256(t, r)]
              for t in sealed_tables() for r in conn.execute(select(t).order_by(*_pk_columns(t)))]
    if listed:
        session.info[_SEALING] = True
        try:
            record(session, actor=SYSTEM, action=ACTION, record_type="database", record_id=len(listed),
                   new={"rows": listed}, reason="baseline: rows written before amtrace sealed rows into the chain")
        finally:
            session.info.pop(_SEALING, None)
    return len(listed)
