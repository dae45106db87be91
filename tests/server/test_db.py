"""SQLite write turns across server processes: a waiter queues (no error), and a crashed holder frees the turn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session

from server.db import begin_read, make_engine

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from sqlalchemy import text
from server.db import make_engine
engine = make_engine(sys.argv[1])
conn = engine.connect()
conn.begin()
conn.execute(text("INSERT INTO t (who) VALUES ('holder')"))
print("holding", flush=True)
time.sleep(600)
"""


def test_write_turn_waits_for_another_process_and_survives_its_crash(tmp_path):
    url = f"sqlite:///{tmp_path / 'records.db'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (who TEXT)"))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "holding"
        assert (tmp_path / "records.db-writer.lock").exists()
        done, failed = threading.Event(), []

        def write():
            try:
                with engine.begin() as conn:
                    conn.execute(text("INSERT INTO t (who) VALUES ('waiter')"))
            except Exception as e:  # noqa: BLE001 - reported below
                failed.append(e)
            done.set()

        waiter = threading.Thread(target=write, daemon=True)
        waiter.start()
        # The other process holds the turn: the writer queues instead of failing.
        assert not done.wait(1.0) and not failed
        # Readers are not held up by the writer (WAL snapshot, no lock).
        with Session(engine) as session:
            begin_read(session)
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        # The kernel drops a dead process's flock and SQLite rolls its transaction back.
        assert done.wait(30), "the write turn was not handed on after the holder was killed"
        assert not failed, failed
        with engine.connect() as conn:
            assert [r.who for r in conn.execute(text("SELECT who FROM t"))] == ["waiter"]
    finally:
        if holder.poll() is None:
            holder.kill()
        engine.dispose()


def test_migrations_build_the_schema_the_models_declare(app):
    """Alembic's head and server.models agree (tables, columns, indexes, constraints) on SQLite and PostgreSQL:
    a model change without its migration would otherwise only show as a slow or failing query in a plant."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from server.models import Base

    with app.state.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
