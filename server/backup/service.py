"""A backup is a folder: the database (SQLite's online backup API, or `pg_dump --format=custom`), a copy of the file
store (design files by SHA-256, the audit anchors) and `manifest.json` with the SHA-256 of every file in it.

Taken online: SQLite's backup API copies a consistent snapshot while the server writes; `pg_dump` reads one
snapshot transaction. Stored files are written once under their own hash before the record that names them
commits, so a copy taken after the database snapshot holds every file the snapshot names. The chain's head is
read *before* the snapshot, so the restored chain must contain it (`audit verify --expect-head`).

Restore goes into an empty database and an empty file store only: it never merges into live records.
Verification restores into a scratch database and runs the same checks a plant runs daily: `audit verify` and
`dhr verify` of every sealed device.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

FORMAT = "amtrace-backup/1"
MANIFEST = "manifest.json"
SQLITE_FILE = "database.sqlite"
PG_FILE = "database.pgdump"
FILES = "files"
ANCHORS = "audit-anchors.jsonl"
Progress = Callable[[str], None]


class BackupError(Exception):
    """A backup that cannot be taken, restored or trusted; the message says what and where."""


@dataclass
class VerifyReport:
    """What `backup verify` found."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    devices_checked: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.problems


def backend(url: str) -> str:
    """'sqlite' or 'postgresql'."""
    name = make_url(url).get_backend_name()
    if name not in ("sqlite", "postgresql"):
        raise BackupError(f"backups support SQLite and PostgreSQL, not {name}")
    return name


def _sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def _libpq(url: str) -> str:
    """The SQLAlchemy URL as the PostgreSQL tools take it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_tool(name: str) -> str:
    """pg_dump / pg_restore: on PATH, else Debian's versioned folder."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise BackupError(f"{name} not found: install the PostgreSQL client (Debian: postgresql-client)")
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _entry(path: Path) -> dict:
    return {"sha256": _sha256(path), "bytes": path.stat().st_size}


def _read_only(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IRGRP)


def _chain_head_and_schema(url: str) -> tuple[dict | None, str | None]:
    """The audit chain's head and the schema revision, in one connection."""
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            row = c.execute(text("SELECT seq, entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1")).first()
            revision = c.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    return (None if row is None else {"seq": row[0], "hash": row[1]}), revision


def create(*, url: str, file_store: str, anchor_path: str, dest: Path, progress: Progress = print) -> dict:
    """Take an online backup into dest (a new or empty folder); return its manifest."""
    kind = backend(url)
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: a backup goes into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    # The anchors and the head first: both must be found in the snapshot taken after them (a daily anchor
    # written during the backup would otherwise name an entry the snapshot does not have).
    anchors = Path(anchor_path)
    anchor_text = anchors.read_bytes() if anchors.exists() else None
    head, revision = _chain_head_and_schema(url)
    manifest: dict = {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(), "backend": kind,
                      "audit_head": head, "schema_revision": revision, "files": {}}
    if kind == "sqlite":
        target = dest / SQLITE_FILE
        source = sqlite3.connect(f"file:{_sqlite_path(url)}?mode=ro", uri=True)
        copy = sqlite3.connect(target)
        try:
            def pages(status: int, remaining: int, total: int) -> None:
                progress(f"database: {total - remaining}/{total} pages")
            source.backup(copy, pages=4096, progress=pages)
        finally:
            copy.close()
            source.close()
    else:
        target = dest / PG_FILE
        progress("database: pg_dump (custom format) …")
        r = subprocess.run([_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), _libpq(url)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BackupError(f"pg_dump failed: {r.stderr.strip()[:500]}")
    manifest["database"] = {"file": target.name, **_entry(target)}
    _read_only(target)
    progress(f"database: {manifest['database']['bytes']:,} bytes, sha256 {manifest['database']['sha256'][:16]}…")
    store = Path(file_store)
    sources = sorted(p for p in store.rglob("*") if p.is_file()) if store.exists() else []
    for n, path in enumerate(sources, 1):
        rel = Path(FILES) / path.relative_to(store)
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if anchor_text is not None and path.resolve() == anchors.resolve():
            (dest / rel).write_bytes(anchor_text)
        else:
            shutil.copyfile(path, dest / rel)
        manifest["files"][rel.as_posix()] = _entry(dest / rel)
        _read_only(dest / rel)
        if n % 200 == 0 or n == len(sources):
            progress(f"files: {n}/{len(sources)}")
    if anchor_text is not None and not anchors.resolve().is_relative_to(store.resolve()):
        (dest / ANCHORS).write_bytes(anchor_text)
        manifest["files"][ANCHORS] = _entry(dest / ANCHORS)
        _read_only(dest / ANCHORS)
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _read_only(dest / MANIFEST)
    progress(f"backup written to {dest}: database and {len(manifest['files'])} files, manifest.json")
    return manifest


def check(src: Path) -> dict:
    """The manifest, after every file it names was hashed again; BackupError naming each file that differs."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise BackupError(f"{src / MANIFEST}: not a readable amtrace backup manifest ({e})") from e
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src / MANIFEST}: format {manifest.get('format')!r}, expected {FORMAT}")
    wanted = {manifest["database"]["file"]: manifest["database"], **manifest["files"]}
    bad = []
    for rel, expected in wanted.items():
        path = src / rel
        if not path.is_file():
            bad.append(f"{rel}: missing")
        elif _sha256(path) != expected["sha256"]:
            bad.append(f"{rel}: SHA-256 differs from the manifest (changed or damaged)")
    listed = set(wanted) | {MANIFEST}
    extra = [p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()
             and p.relative_to(src).as_posix() not in listed]
    bad += [f"{rel}: not in the manifest (added after the backup)" for rel in sorted(extra)]
    if bad:
        raise BackupError("backup " + str(src) + " fails its manifest:\n  " + "\n  ".join(bad))
    return manifest


def _refuse_non_empty_database(url: str) -> None:
    if backend(url) == "sqlite":
        path = _sqlite_path(url)
        if path.exists() and path.stat().st_size > 0:
            raise BackupError(f"{path} exists: restore goes into a new, empty database only")
        return
    engine = create_engine(url)
    try:
        tables = inspect(engine).get_table_names()
    finally:
        engine.dispose()
    if tables:
        raise BackupError(f"database {make_url(url).database} has {len(tables)} tables: restore goes into an empty "
                          "database only")


def restore(src: Path, *, url: str, file_store: str, anchor_path: str, progress: Progress = print) -> dict:
    """Restore a checked backup into an empty database and an empty file store; return its manifest."""
    manifest = check(src)
    progress(f"backup {src}: every file matches its manifest")
    if backend(url) != manifest["backend"]:
        raise BackupError(f"the backup is of a {manifest['backend']} database; AMTRACE_DATABASE_URL is {backend(url)}")
    _refuse_non_empty_database(url)
    store = Path(file_store)
    if store.exists() and any(store.iterdir()):
        raise BackupError(f"file store {store} is not empty: restore goes into an empty file store only")
    if manifest["backend"] == "sqlite":
        path = _sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / SQLITE_FILE, path)
        path.chmod(0o600)
    else:
        progress("database: pg_restore …")
        r = subprocess.run([_pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction",
                            "--dbname", _libpq(url), str(src / PG_FILE)], capture_output=True, text=True)
        if r.returncode != 0:
            raise BackupError(f"pg_restore failed: {r.stderr.strip()[:500]}")
    progress("database restored")
    rels = [rel for rel in manifest["files"] if rel.startswith(FILES + "/")]
    for n, rel in enumerate(rels, 1):
        target = store / Path(rel).relative_to(FILES)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, target)
        if n % 200 == 0 or n == len(rels):
            progress(f"files: {n}/{len(rels)}")
    if ANCHORS in manifest["files"] and not Path(anchor_path).exists():
        Path(anchor_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / ANCHORS, anchor_path)
    return manifest


@contextmanager
def _scratch_database(kind: str, like_url: str, folder: Path) -> Iterator[str]:
    """An empty database to restore into: a file in folder, or a new PostgreSQL database beside like_url's."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'verify.sqlite'}"
        return
    name = f"amtrace_verify_{uuid.uuid4().hex[:12]}"
    admin = create_engine(like_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(like_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def verify(src: Path, *, url: str, influx_settings, folder: Path, progress: Progress = print) -> VerifyReport:
    """Restore into a scratch database and store under folder; run audit verify and dhr verify of every sealed
    device there. url names the server the scratch PostgreSQL database is created on (for a PostgreSQL backup)."""
    import server.registry  # noqa: F401 - every domain registers how to rehash its signed records and files
    from server.audit.verify import verify as audit_verify
    from server.db import make_engine, make_sessionmaker
    from server.history.seal import verify_device
    from server.models import Device, DeviceSeal
    from server.timeseries.influx import InfluxQL, TimeSeriesUnavailable

    report = VerifyReport()
    try:
        manifest = check(src)
    except BackupError as e:
        report.problems.append(str(e))
        return report
    progress(f"backup {src}: every file matches its manifest")
    with _scratch_database(manifest["backend"], url, folder) as scratch:
        store, anchors = folder / "files", folder / "files" / ANCHORS
        restore(src, url=scratch, file_store=str(store), anchor_path=str(anchors), progress=progress)
        settings = influx_settings.model_copy(update={"database_url": scratch, "file_store": str(store),
                                                      "audit_anchor_file": None})
        engine = make_engine(scratch)
        try:
            sessions = make_sessionmaker(engine, settings)
            head = manifest.get("audit_head") or {}
            with sessions() as session:
                progress("audit verify …")
                audit = audit_verify(session, expect_head=head.get("hash"), anchor_file=settings.anchor_path)
            if audit.ok:
                report.notes.append(f"audit trail intact: {audit.entries_checked} entries, "
                                    f"{audit.signatures_checked} signatures, {audit.rows_checked} sealed rows")
            report.problems += [f"audit: {b.problem}" for b in audit.breaks]
            with sessions() as session:
                codes = list(session.scalars(select(Device.device_code).join(DeviceSeal, DeviceSeal.device_id == Device.id)
                                             .order_by(Device.device_code)))
            with InfluxQL.from_settings(settings) as influx:
                for n, code in enumerate(codes, 1):
                    with sessions() as session:
                        try:
                            result = verify_device(session, influx, device_code=code)
                        except TimeSeriesUnavailable as e:
                            report.problems.append(f"dhr {code}: not checked: {e.detail}")
                            continue
                    report.devices_checked += 1
                    if not result.ok:
                        report.problems += [f"dhr {code}: {p}" for p in result.problems] or [f"dhr {code}: changed"]
                    progress(f"dhr verify: {n}/{len(codes)} sealed devices")
        finally:
            engine.dispose()
    return report


def prune(folder: Path, keep: int, progress: Progress = print) -> list[Path]:
    """Remove the oldest complete backups under folder beyond the newest `keep`; return what was removed."""
    done = sorted(p for p in folder.iterdir() if (p / MANIFEST).is_file())
    removed = done[:-keep] if keep > 0 else []
    for p in removed:
        for f in p.rglob("*"):
            if f.is_file():
                os.chmod(f, stat.S_IWUSR | stat.S_IRUSR)
        shutil.rmtree(p)
        progress(f"removed old backup {p}")
    return removed
