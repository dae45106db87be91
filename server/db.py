"""Database engine, the one session dependency (commit on success, rollback on error) and migrations."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import Request
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from server.errors import DomainError
from server.settings import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


# Busy timeout of SQLite and the longest a write transaction waits for its turn, in seconds.
SQLITE_BUSY_SECONDS = 30
# Request threads of one server process (AnyIO's default thread pool): a connection for each, so a
# request never waits on the connection pool as well as on the database.
THREADS_PER_PROCESS = 40


class SQLiteWriteQueue(sqlite3.Connection):
    """A sqlite3 connection whose write transactions queue for their turn instead of polling for it.

    SQLite admits one writer; a second BEGIN IMMEDIATE waits in SQLite's busy handler, which sleeps
    1, 2, 5, 10 … 100 ms between tries, so under load a waiter often sleeps long after the lock is
    free. Threads of one process queue on a Python lock, and server processes on an flock() of a
    file beside the database; both wake the next waiter the moment the holder lets go. Programs that
    do not take the flock (the sqlite3 shell, an old CLI) still meet SQLite's own lock and busy timeout.
    """

    write_lock: threading.Lock
    turn_file: int | None = None
    holds_lock = False

    def begin_immediate(self) -> None:
        """Wait for this process's turn (at most the busy timeout), then the other processes', then BEGIN."""
        if not self.write_lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            raise sqlite3.OperationalError(
                f"database is locked: no write turn within {SQLITE_BUSY_SECONDS} s (another transaction "
                f"of this process held it)")
        self.holds_lock = True
        try:
            if self.turn_file is not None:
                # Blocking flock releases the GIL and is woken by the kernel at the holder's unlock
                # (or its exit: a crashed process cannot keep the turn).
                fcntl.flock(self.turn_file, fcntl.LOCK_EX)
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        if self.holds_lock:
            self.holds_lock = False
            if self.turn_file is not None:
                fcntl.flock(self.turn_file, fcntl.LOCK_UN)
            self.write_lock.release()

    def commit(self) -> None:
        """Commit, then let the next transaction of this process begin."""
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        """Roll back, then let the next transaction of this process begin."""
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        """Close (SQLite rolls back an open transaction) and give up the turn."""
        try:
            super().close()
        finally:
            self._release()
            if self.turn_file is not None:
                os.close(self.turn_file)
                self.turn_file = None


_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock_for(path: str) -> threading.Lock:
    key = os.path.abspath(path) if path and path != ":memory:" else f"memory:{id(object())}"
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.Lock())


def missing_sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names when it does not exist yet (connecting would create it empty), else None."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1]
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return Path(path)


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, full fsync, foreign keys and one writer at a time (BEGIN IMMEDIATE)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_lock = _write_lock_for(path)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS,
                                                  "factory": SQLiteWriteQueue},
                               pool_size=THREADS_PER_PROCESS, max_overflow=0, pool_timeout=SQLITE_BUSY_SECONDS)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            dbapi_conn.write_lock = write_lock
            if path and path != ":memory:":
                # One descriptor per connection: flock() locks belong to an open file description.
                dbapi_conn.turn_file = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
            # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so a committed audit entry or gate decision
            # survives a power cut (NORMAL could lose the last commits before a checkpoint).
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            dbapi_conn = conn.connection.dbapi_connection
            if conn.get_execution_options().get(READ_ONLY_OPTION):
                # A reader: a WAL snapshot, no lock; writers go on meanwhile.
                dbapi_conn.execute("BEGIN")
                return
            # The audit chain reads its head and appends in one transaction; IMMEDIATE takes
            # SQLite's write lock up front so two writers can never fork the chain.
            dbapi_conn.begin_immediate()

        return engine
    # Two server processes of 40 request threads each stay within PostgreSQL's default 100 connections.
    return create_engine(url, pool_size=THREADS_PER_PROCESS, max_overflow=0, pool_timeout=SQLITE_BUSY_SECONDS,
                         pool_pre_ping=True)


READ_ONLY_OPTION = "amtrace_read_only"
# session.info key: the transaction begun by begin_read, until start_writing ends its read phase.
_READING = "amtrace_reading_in"


def begin_read(session: Session, *, then_write: bool = False) -> None:
    """Begin the session's transaction as a reader: on SQLite a snapshot that takes no write lock.

    Only for work that writes nothing (authentication, the release gate's checks, long reads). Nothing
    enforces it: a write in it would bypass the write queue, and SQLite refuses it with "database is
    locked" once another connection has committed. PRAGMA query_only would enforce it, but switching
    it per transaction cost ~0.4 ms of CPU per gate decision (measured), a tenth of the whole decision.

    then_write: the reads are followed by writes of the same request (the release gate), after
    start_writing(). On PostgreSQL the reads then run in an ordinary transaction that goes on to
    write on the same connection (one pool checkout and its liveness ping instead of two).
    """
    if session.in_transaction():
        raise RuntimeError("begin_read needs a session without an open transaction")
    options: dict = {}
    if session.get_bind().dialect.name == "sqlite":
        options[READ_ONLY_OPTION] = True
    elif not then_write:
        # READ COMMITTED gives each statement its own snapshot in or out of a transaction, so a reader
        # gains nothing from BEGIN/COMMIT but two round trips.
        options["isolation_level"] = "AUTOCOMMIT"
    session.connection(execution_options=options)
    session.info[_READING] = session.get_transaction()


def is_reading(session: Session) -> bool:
    """True while the session's open transaction is the read phase begun with begin_read."""
    return session.in_transaction() and session.info.get(_READING) is session.get_transaction()


def start_writing(session: Session) -> None:
    """End the read phase of begin_read so that the session may write.

    SQLite commits the snapshot, so the next statement begins a write transaction (queued for the
    write lock); PostgreSQL after begin_read(then_write=True) carries on in the same transaction,
    whose later statements each see every commit made meanwhile (READ COMMITTED).
    """
    if not is_reading(session):
        raise RuntimeError("start_writing needs a session in the read phase of begin_read")
    session.info.pop(_READING)
    options = session.connection().get_execution_options()
    if options.get(READ_ONLY_OPTION) or options.get("isolation_level") == "AUTOCOMMIT":
        session.commit()


def end_read_transaction(session: Session) -> None:
    """End a transaction that only read (authentication), so no lock is held across FastAPI's thread hops."""
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("end_read_transaction called on a session with unsaved changes")
    session.commit()


def make_sessionmaker(engine: Engine, settings: Settings) -> sessionmaker[Session]:
    """Sessions carry the settings in session.info so services need no globals, and seal the rows they write."""
    from server.audit import rows  # the audit package builds on this module's sessions

    maker = sessionmaker(engine, expire_on_commit=False, info={"settings": settings})
    rows.install(maker)
    return maker


@contextmanager
def session_scope(maker: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back otherwise (keeping refused-signature audit)."""
    session: Session = maker()
    try:
        yield session
        session.commit()
    except DomainError as e:
        if e.keep_audit:
            session.commit()
        else:
            session.rollback()
        raise
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_session(request: Request) -> Iterator[Session]:
    """The one way to get a session in an endpoint: commit when the request succeeded, roll back otherwise."""
    with session_scope(request.app.state.sessionmaker) as session:
        yield session


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at url to revision with Alembic."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, revision)


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """(the database's Alembic revision or None, the code's head revision); raises the driver's error when the
    database cannot be reached."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head


def schema_problem(engine: Engine, *, detail: bool = True) -> str | None:
    """Why this database cannot serve (unreachable, never migrated, behind the code), or None when it can.

    detail=False leaves the driver's words out (hosts, users): for the unauthenticated readiness probe."""
    try:
        current, head = schema_state(engine)
    except Exception as e:  # noqa: BLE001 - any driver error means: not reachable as configured
        if not detail:
            return "the database cannot be reached"
        first = str(getattr(e, "orig", e)).strip().splitlines()
        return f"the database cannot be reached: {first[0] if first else type(e).__name__}"
    if current is None:
        return "the database has no amtrace schema: run `amtrace-server migrate`"
    if current != head:
        return f"the database schema is at {current}, the code needs {head}: run `amtrace-server migrate`"
    return None


from typing import Annotated  # noqa: E402

from fastapi import Depends  # noqa: E402

# "function" scope: commit happens before the response leaves, so a client never sees a
# success whose transaction then failed to commit.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_or_not_found(session: Session, model, key, message: str, *, code: str):
    """The row of model with primary key key, or NotFound(message, code) — the one way services look rows up."""
    from server.errors import NotFound

    row = session.get(model, key)
    if row is None:
        raise NotFound(message, code=code)
    return row
