"""amtrace-server: serve, migrate, create-user, audit verify, dhr verify|seal|summarize."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from server.settings import Settings


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as e:
        # One line per problem, naming the environment variable, instead of pydantic's report.
        lines = []
        for err in e.errors():
            where = f"AMTRACE_{'_'.join(map(str, err['loc'])).upper()}: " if err["loc"] else ""
            lines.append(f"amtrace-server: settings refused: {where}{err['msg'].removeprefix('Value error, ')}")
        sys.exit("\n".join(lines))


@contextmanager
def _database() -> Iterator[tuple[Settings, Any]]:
    """The settings and a sessionmaker on an engine of their database, disposed of at the end."""
    from server.db import make_engine, make_sessionmaker

    settings = _settings()
    _refuse_missing_database(settings)
    engine = make_engine(settings.database_url)
    try:
        yield settings, make_sessionmaker(engine, settings)
    finally:
        engine.dispose()


def _refuse_missing_database(settings: Settings) -> None:
    """Exit with one line when the SQLite file does not exist: connecting would create an empty database there
    (`audit verify` without settings once left ./var/server.db behind)."""
    from server.db import missing_sqlite_file

    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        sys.exit(f"amtrace-server: no database at {missing} (AMTRACE_DATABASE_URL={_redact(settings.database_url)}): "
                 f"point AMTRACE_DATABASE_URL at the server's database, or create one with `amtrace-server migrate`")


def _device(session, device_code: str):
    """The device with this code, or None."""
    from sqlalchemy import select

    from server.models import Device

    return session.scalar(select(Device).where(Device.device_code == device_code))


# Seconds a stopping server waits for requests in flight: the agents' context long polls (up to a minute)
# would otherwise hold a shutdown that long; cut off, they reconnect to the next server at once.
SHUTDOWN_GRACE_S = 5


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the API with uvicorn."""
    import uvicorn

    from server.app import create_served_app

    settings = _settings()  # refuse bad settings here, before uvicorn starts
    _refuse_missing_database(settings)
    from server.db import make_engine, schema_problem

    engine = make_engine(settings.database_url)
    try:
        problem = schema_problem(engine)
    finally:
        engine.dispose()
    if problem:
        # Serving would answer every call with a 500 and /healthz "ok": refuse, in one line, with what to do.
        print(f"amtrace-server: not serving {_redact(settings.database_url)}: {problem}", file=sys.stderr)
        return 2
    if args.workers > 1:
        # Each worker process builds its own app from the same AMTRACE_* environment.
        uvicorn.run("server.app:create_served_app", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level=args.log_level, access_log=not args.no_access_log,
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    else:
        uvicorn.run(create_served_app(), host=args.host, port=args.port, log_level=args.log_level,
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
                    access_log=not args.no_access_log)
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the database schema to the latest revision."""
    from server.db import migrate

    settings = _settings()
    migrate(settings.database_url, args.revision)
    print(f"database at revision {args.revision}: {_redact(settings.database_url)}")
    if args.revision == "head":
        from server.audit.rows import seal_baseline

        with _database() as (_, sessions), sessions() as session, session.begin():
            sealed = seal_baseline(session)
        if sealed:
            print(f"sealed {sealed} existing rows into the audit chain (baseline for `audit verify`)")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    """Create a person (used to create the first admin)."""
    from server.auth.service import create_user
    from server.errors import DomainError
    from server.security import SYSTEM

    password = os.environ.get("AMTRACE_NEW_USER_PASSWORD") or getpass.getpass(f"password for {args.username}: ")
    try:
        with _database() as (_, sessions), sessions() as session, session.begin():
            user = create_user(session, actor=SYSTEM, username=args.username, full_name=args.full_name,
                               role=args.role, password=password)
            print(f"created user {user.username} (id {user.id}, role {user.role})")
    except DomainError as e:
        print(f"amtrace-server: {e.detail}", file=sys.stderr)
        return 1
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify the audit chain and signatures; exit 1 and say where it breaks."""
    import server.registry  # noqa: F401 - every domain registers how to rehash its signed records and files
    from server.audit.verify import verify
    from server.db import begin_read

    with _database() as (_, sessions), sessions() as session:
        begin_read(session)  # walks the whole chain: a reader holds up no writer of a running server
        report = verify(session, expect_head=args.expect_head, anchor_file=args.anchors)
    if args.record:
        _record_verification(report)
    print(f"checked {report.entries_checked} audit entries, {report.signatures_checked} signatures and "
          f"{report.rows_checked} sealed rows, stored files and the anchors in {args.anchors or _settings().anchor_path}")
    print(f"head: entry {report.head_seq} hash {report.head_hash}")
    if report.ok:
        print("audit trail intact")
        return 0
    for b in report.breaks:
        where = f"entry {b.seq}" if b.seq is not None else (f"signature {b.signature_id}" if b.signature_id
                                                             else "chain")
        print(f"BROKEN at {where}: {b.problem}")
    return 1


def _record_verification(report) -> None:
    """Store the outcome, so /metrics shows the last verification and its age (the audit-verify-failed alert)."""
    from server.db import session_scope
    from server.models import AuditVerification

    with _database() as (_, sessions), session_scope(sessions) as session:
        first = report.breaks[0].problem if report.breaks else None
        session.add(AuditVerification(ok=report.ok, head_seq=report.head_seq, entries_checked=report.entries_checked,
                                      problems=len(report.breaks), first_problem=first))


def cmd_audit_anchor(args: argparse.Namespace) -> int:
    """Append the chain's head to the anchor file (or --out), for a copy kept outside the database."""
    from server.audit.anchors import write_anchor
    from server.db import begin_read

    with _database() as (settings, sessions), sessions() as session:
        begin_read(session)
        anchor = write_anchor(session, args.out or settings.anchor_path, settings.audit_key)
    if anchor is None:
        print("the audit chain is empty: nothing to anchor")
        return 0
    print(f"anchored entry {anchor.seq} hash {anchor.hash} (key {anchor.key_fingerprint}) in "
          f"{args.out or settings.anchor_path}")
    return 0


def cmd_dhr_verify(args: argparse.Namespace) -> int:
    """Recompute a released device's seal; exit 1 naming every point changed, added or deleted since release."""
    from server.db import begin_read
    from server.timeseries.influx import InfluxQL, TimeSeriesUnavailable
    from server.history.seal import verify_device

    try:
        with _database() as (settings, sessions), InfluxQL.from_settings(settings) as influx, sessions() as session:
            begin_read(session)  # reads every point of the device: no write lock meanwhile
            check = verify_device(session, influx, device_code=args.device_code)
    except TimeSeriesUnavailable as e:
        print(f"amtrace-server: {e.detail}", file=sys.stderr)
        return 2
    if check.ok:
        print(f"device {check.device_code}: sealed record intact ({check.points} points; source: {check.source})")
        for n in check.notes:
            print(f"  {n}")
        return 0
    print(f"device {check.device_code}: {'CHANGED SINCE RELEASE' if check.sealed else 'NOT SEALED'}"
          + (f" (points checked in: {check.source})" if check.source else ""))
    for p in check.problems:
        print(f"  {p}")
    for n in check.notes:
        print(f"  {n}")
    return 1


def cmd_dhr_archive(args: argparse.Namespace) -> int:
    """Write the archive of a sealed device (or of every sealed device without one)."""
    from server.archive import service as archive
    from server.errors import DomainError
    from server.timeseries.influx import TimeSeriesUnavailable

    if bool(args.device_code) == args.pending:
        print("amtrace-server: give one DEVICE_CODE or --pending", file=sys.stderr)
        return 2
    with _database() as (_, sessions):
        if args.pending:
            done, failed = archive.write_pending(sessions, progress=lambda s: print(s, file=sys.stderr))
            print(f"{len(done)} device(s) archived, {len(failed)} failed")
            for f in failed:
                print(f"  {f}")
            return 1 if failed else 0
        with sessions() as session:
            try:
                row = archive.write(session, device_code=args.device_code,
                                    progress=lambda s: print(s, file=sys.stderr))
            except (DomainError, TimeSeriesUnavailable) as e:
                print(f"amtrace-server: {e.detail}", file=sys.stderr)
                return 1
            print(f"device {args.device_code} archived: {row.archive_id}, {row.files} files, "
                  f"{row.size_bytes / 1e6:.1f} MB, manifest {row.manifest_sha256}")
    return 0


def cmd_dhr_export(args: argparse.Namespace) -> int:
    """Write a released device's points at full resolution from its archive (hash-checked)."""
    import gzip
    import json

    from server.archive import reading as archive
    from server.db import begin_read
    from server.errors import DomainError

    with _database() as (_, sessions), sessions() as session:
        begin_read(session)
        device = _device(session, args.device_code)
        if device is None:
            print(f"amtrace-server: no device {args.device_code}", file=sys.stderr)
            return 1
        try:
            text = gzip.decompress(archive.read_file(session, device=device, name=archive.SERIES)).decode()
            schema = json.loads(archive.read_file(session, device=device, name="schema.json"))
        except DomainError as e:
            print(f"amtrace-server: {e.detail}", file=sys.stderr)
            return 1
    out = open(args.output, "w") if args.output else sys.stdout
    n = 0
    try:
        if args.format == "canonical":
            lines = (line for line in text.split("\n") if line)
        else:
            lines = archive.to_line_protocol(text, schema)
        for line in lines:
            out.write(line + "\n")
            n += 1
    finally:
        if args.output:
            out.close()
    print(f"{n} points of {args.device_code} exported from its archive ({args.format})", file=sys.stderr)
    return 0


def cmd_retention_show(args: argparse.Namespace) -> int:
    """Say until when a record is kept, and why."""
    from server.db import begin_read
    from server.errors import DomainError
    from server.retention.purge import kept

    with _database() as (_, sessions), sessions() as session:
        begin_read(session)
        try:
            k = kept(session, args.record_type, args.record_id)
        except DomainError as e:
            print(f"amtrace-server: {e.detail}", file=sys.stderr)
            return 1
    print(f"{k.record}: kept {'until further notice' if k.until is None else 'until ' + k.until.isoformat()} "
          f"({k.because})")
    return 0


def cmd_retention_purge(args: argparse.Namespace) -> int:
    """Purge a job's records after retention, signed by an administrator (refused under retention)."""
    from sqlalchemy import select

    from server.designs.service import principal_of
    from server.errors import DomainError
    from server.models import User
    from server.retention.purge import purge, remove_archives

    with _database() as (settings, sessions):
        with sessions() as session:
            user = session.scalar(select(User).where(User.username == args.user))
            if user is None:
                print(f"amtrace-server: no user {args.user}", file=sys.stderr)
                return 1
            actor = principal_of(user)
        password = os.environ.get("AMTRACE_SIGNATURE_PASSWORD") or getpass.getpass(
            f"signature of {args.user} (password): ")
        try:
            with sessions() as session, session.begin():
                tombstone = purge(session, actor=actor, record_type=args.record_type, record_id=args.record_id,
                                  password=password, reason=args.reason)
        except DomainError as e:
            print(f"amtrace-server: {e.detail}", file=sys.stderr)
            return 1
        remove_archives(settings, tombstone)
    print(f"job {tombstone['job_id']} purged ({', '.join(d['device_code'] for d in tombstone['devices'])}): "
          + ", ".join(f"{n} {t}" for t, n in tombstone["rows"].items()) + f"; signature {tombstone['signature_id']}")
    return 0


def cmd_dhr_seal(args: argparse.Namespace) -> int:
    """Seal a released device whose seal was deferred (InfluxDB was unavailable at release)."""
    from server.db import begin_read
    from server.errors import DomainError
    from server.history.seal import read_series, seal_device
    from server.security import SYSTEM

    try:
        with _database() as (_, sessions):
            # The time series first, in a read transaction: tens of seconds at 10 Hz that must not hold
            # the write lock of a running server (as stages.service.read_release_series at release).
            with sessions() as session:
                begin_read(session)
                device = _device(session, args.device_code)
                if device is None:
                    print(f"amtrace-server: no device {args.device_code}", file=sys.stderr)
                    return 1
                series = read_series(session, device=device)
            with sessions() as session, session.begin():
                seal = seal_device(session, actor=SYSTEM, device=_device(session, args.device_code), series=series)
            print(f"device {args.device_code} sealed: {seal.point_count} points, series {seal.series_sha256}; "
                  f"build summary stored")
            from server.archive import service as archive
            with sessions() as session:
                row = archive.write(session, device_code=args.device_code, series=series,
                                    progress=lambda s: print(s, file=sys.stderr))
            print(f"device {args.device_code} archived: {row.archive_id}, {row.files} files")
    except DomainError as e:
        print(f"amtrace-server: {e.detail}", file=sys.stderr)
        return 1
    return 0


def cmd_dhr_summarize(args: argparse.Namespace) -> int:
    """Store the build summary of sealed devices that have none (released before summaries were stored)."""
    from sqlalchemy import select

    from server.db import begin_read
    from server.errors import DomainError
    from server.history import summaries
    from server.timeseries.influx import InfluxQL
    from server.models import BuildSummaryRecord, Device, DeviceSeal
    from server.security import SYSTEM

    if bool(args.device_code) == args.all:
        print("amtrace-server: give one DEVICE_CODE or --all", file=sys.stderr)
        return 2
    failed = done = 0
    with _database() as (settings, sessions), InfluxQL.from_settings(settings) as influx:
        with sessions() as session:
            q = (select(Device.device_code).join(DeviceSeal, DeviceSeal.device_id == Device.id)
                 .where(~select(BuildSummaryRecord.id).where(BuildSummaryRecord.device_id == Device.id).exists())
                 .order_by(Device.id))
            codes = list(session.scalars(q if args.all else q.where(Device.device_code == args.device_code)))
        if not args.all and not codes:
            print(f"amtrace-server: {args.device_code} is not a sealed device without a stored summary",
                  file=sys.stderr)
            return 1
        for code in codes:  # one transaction per device: a failure leaves the others stored
            try:
                with sessions() as session:  # InfluxDB read outside the write lock, as at release
                    begin_read(session)
                    summary = summaries.compute(session, influx, device=_device(session, code))
                with sessions() as session, session.begin():
                    row = summaries.save(session, actor=SYSTEM, device=_device(session, code), summary=summary)
                print(f"device {code}: summary stored, SHA-256 {row.summary_sha256}")
                done += 1
            except DomainError as e:
                print(f"device {code}: {e.detail}", file=sys.stderr)
                failed += 1
    print(f"{done} summaries stored, {failed} failed")
    return 1 if failed else 0


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(prog="amtrace-server", description=(
        "amtrace central server. Settings come from AMTRACE_* environment variables "
        "(AMTRACE_DATABASE_URL, AMTRACE_SECRET_KEY, AMTRACE_AUDIT_KEY, AMTRACE_ENVIRONMENT)."))
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP API")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8400, help="port (default 8400)")
    s.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    s.add_argument("--log-level", default="info", help="uvicorn log level")
    s.add_argument("--no-access-log", action="store_true", help="do not log each request")
    s.set_defaults(func=cmd_serve)

    m = sub.add_parser("migrate", help="create or upgrade the database schema (Alembic)")
    m.add_argument("--revision", default="head", help="target revision (default head)")
    m.set_defaults(func=cmd_migrate)

    u = sub.add_parser("create-user", help="create a person; password from AMTRACE_NEW_USER_PASSWORD or prompt")
    u.add_argument("username", help="unique login id (never reused)")
    u.add_argument("--full-name", required=True, help="printed name used in signatures")
    u.add_argument("--role", required=True, choices=["operator", "production_manager", "quality_engineer",
                                                     "design_engineer", "clinician", "admin"])
    u.set_defaults(func=cmd_create_user)

    a = sub.add_parser("audit", help="audit trail tools")
    asub = a.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", help="verify the hash chain, signatures, sealed rows, stored files and anchors; "
                                       "exit 1 naming each break")
    v.add_argument("--expect-head", default=None, help="head hash recorded earlier, to detect deleted tail entries")
    v.add_argument("--anchors", default=None, help="anchor file to check the chain against (default: the server's)")
    v.add_argument("--no-record", dest="record", action="store_false",
                   help="do not store the outcome in the database (by default the last outcome is shown in /metrics)")
    v.set_defaults(func=cmd_audit_verify)
    an = asub.add_parser("anchor", help="append the chain's head to the anchor file, to keep a copy elsewhere")
    an.add_argument("--out", default=None, help="file to append to (default: AMTRACE_AUDIT_ANCHOR_FILE)")
    an.set_defaults(func=cmd_audit_anchor)

    d = sub.add_parser("dhr", help="device history record tools")
    dsub = d.add_subparsers(dest="dhr_command", required=True)
    dv = dsub.add_parser("verify", help="recompute a released device's seal; exit 1 naming changed points")
    dv.add_argument("device_code", help="the device code")
    dv.set_defaults(func=cmd_dhr_verify)
    ds = dsub.add_parser("seal", help="seal a released device whose seal was deferred")
    ds.add_argument("device_code", help="the device code")
    ds.set_defaults(func=cmd_dhr_seal)
    dm = dsub.add_parser("summarize", help="store the build summary of sealed devices that have none "
                                           "(released before summaries were stored)")
    dm.add_argument("device_code", nargs="?", help="the device code")
    dm.add_argument("--all", action="store_true", help="every sealed device without a stored summary")
    dm.set_defaults(func=cmd_dhr_summarize)
    da = dsub.add_parser("archive", help="write the self-contained archive of a sealed device (done at release; "
                                         "this for a device whose archive is missing)")
    da.add_argument("device_code", nargs="?", help="the device code")
    da.add_argument("--pending", action="store_true", help="every sealed device without an archive")
    da.set_defaults(func=cmd_dhr_archive)
    de = dsub.add_parser("export", help="a released device's points at full resolution, from its archive "
                                        "(hash-checked), as InfluxDB line protocol or the sealed canonical text")
    de.add_argument("device_code", help="the device code")
    de.add_argument("--format", choices=["lp", "canonical"], default="lp",
                    help="lp: line protocol, importable with `influx write` (default); canonical: the sealed text")
    de.add_argument("-o", "--output", default=None, help="file to write (default: standard output)")
    de.set_defaults(func=cmd_dhr_export)

    rt = sub.add_parser("retention", help="how long records are kept; the signed purge after retention")
    rsub = rt.add_subparsers(dest="retention_command", required=True)
    types = ["job", "device", "cycle", "nonconformity", "signature"]
    rs = rsub.add_parser("show", help="until when a record is kept, and why")
    rs.add_argument("record_type", choices=types + ["design_iteration", "material_lot"])
    rs.add_argument("record_id", help="the job, cycle, nonconformity or signature number, or the device code")
    rs.set_defaults(func=cmd_retention_show)
    rp = rsub.add_parser("purge", help="delete the records of the job holding RECORD after retention, with an "
                                       "administrator's signature (password from AMTRACE_SIGNATURE_PASSWORD or asked); "
                                       "refused while any of its devices is under retention")
    rp.add_argument("record_type", choices=types)
    rp.add_argument("record_id", help="the job, cycle, nonconformity or signature number, or the device code")
    rp.add_argument("--user", required=True, help="the administrator who signs the purge")
    rp.add_argument("--reason", required=True, help="why the records are purged")
    rp.set_defaults(func=cmd_retention_purge)

    b = sub.add_parser("backup", help="online backup of the records (database, file store, anchors) with a manifest "
                                      "of SHA-256 hashes; `backup DEST` is `backup create DEST`")
    bsub = b.add_subparsers(dest="backup_command", required=True)
    bc = bsub.add_parser("create", help="take a backup into a new folder while the server keeps running")
    bc.add_argument("dest", nargs="?", help="the new folder")
    bc.add_argument("--into", help="instead of DEST: a new folder amtrace-<UTC time> under this one")
    bc.add_argument("--keep", type=int, default=0, help="with --into: then remove all but the newest N backups there")
    bc.set_defaults(func=cmd_backup_create)
    bv = bsub.add_parser("verify", help="check the manifest, restore into a scratch database and run audit verify "
                                        "and dhr verify of every sealed device; exit 1 naming what fails")
    bv.add_argument("src", nargs="?", help="the backup folder")
    bv.add_argument("--latest", help="instead of SRC: the newest backup under this folder")
    bv.set_defaults(func=cmd_backup_verify)
    r = sub.add_parser("restore", help="restore a backup into an empty database and an empty file store")
    r.add_argument("src", help="the backup folder")
    r.set_defaults(func=cmd_restore)
    return p


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_backup_create(args: argparse.Namespace) -> int:
    """Take an online backup."""
    from server.backup.service import BackupError, create, prune

    settings = _settings()
    _refuse_missing_database(settings)
    if bool(args.dest) == bool(args.into):
        print("amtrace-server: name either DEST or --into FOLDER", file=sys.stderr)
        return 2
    dest = Path(args.dest) if args.dest else Path(args.into) / f"amtrace-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    try:
        create(url=settings.database_url, file_store=settings.file_store, anchor_path=settings.anchor_path,
               dest=dest, progress=_progress)
        if args.into and args.keep:
            prune(Path(args.into), args.keep, progress=_progress)
    except BackupError as e:
        print(f"amtrace-server: {e}", file=sys.stderr)
        return 1
    print(dest)
    return 0


def cmd_backup_verify(args: argparse.Namespace) -> int:
    """Verify a backup by restoring it into a scratch database."""
    import tempfile

    from server.backup.service import MANIFEST, verify

    if bool(args.src) == bool(args.latest):
        print("amtrace-server: name either SRC or --latest FOLDER", file=sys.stderr)
        return 2
    src = Path(args.src) if args.src else max((p for p in Path(args.latest).iterdir() if (p / MANIFEST).is_file()),
                                               default=None)
    if src is None:
        print(f"amtrace-server: no complete backup under {args.latest}", file=sys.stderr)
        return 1
    settings = _settings()
    with tempfile.TemporaryDirectory(prefix="amtrace-backup-verify-") as tmp:
        report = verify(src, url=settings.database_url, influx_settings=settings, folder=Path(tmp), progress=_progress)
    for n in report.notes:
        print(n)
    if report.ok:
        print(f"backup {src} verified: manifest, audit trail and {report.devices_checked} sealed device(s) intact")
        return 0
    for p in report.problems:
        print(f"FAILED: {p}")
    return 1


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into an empty database and file store."""
    from server.backup.service import BackupError, restore

    settings = _settings()
    try:
        manifest = restore(Path(args.src), url=settings.database_url, file_store=settings.file_store,
                           anchor_path=settings.anchor_path, progress=_progress)
    except BackupError as e:
        print(f"amtrace-server: {e}", file=sys.stderr)
        return 1
    print(f"restored {args.src} (taken {manifest['created_at']}, schema {manifest['schema_revision']}); "
          "run `amtrace-server migrate` if this version's schema is newer, then `amtrace-server audit verify`")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the amtrace-server console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "backup" and argv[1] not in ("create", "verify", "-h", "--help"):
        argv.insert(1, "create")  # `amtrace-server backup DEST`
    args = build_parser().parse_args(argv)
    import sqlalchemy.exc

    try:
        return args.func(args)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError) as e:
        if "no such table" not in str(e.orig) and "does not exist" not in str(e.orig):
            raise
        # Pointed at a database amtrace never created (a wrong AMTRACE_DATABASE_URL): say so, not a traceback.
        print(f"amtrace-server: the database {_redact(_settings().database_url)} has no amtrace records "
              f"({str(e.orig).splitlines()[0]}): check AMTRACE_DATABASE_URL, or create it with "
              f"`amtrace-server migrate`", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
