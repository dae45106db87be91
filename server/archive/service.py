"""A released device's self-contained archive: everything a regulator may ask for, outside InfluxDB and the database.

Written once, right after the release that sealed the device (and by `amtrace-server dhr archive` for any sealed
device without one), under `<device code>/<archive id>/` in the archive store:

| file | what |
|---|---|
| `series.txt.gz` | every point under the device code in the sealed range, as the exact canonical text the seal hashed (`measurement⇥time_ns⇥key=value…`, values as InfluxDB's JSON gives them): SHA-256 of the text = the seal's `series_sha256` |
| `machine-windows.json`, `window-N.txt.gz` | the build machine's points in the build window and each cycle machine's points in the cycle window that do not carry this device code (written before the agent learned of the job or cycle, or another device's), same text |
| `schema.json` | per measurement its tag keys and field types (to export as line protocol: `dhr export`) |
| `dhr.json`, `dhr.pdf` | the device history record as of archiving |
| `audit.jsonl` | every audit entry about the device and its job, with its chain hashes |
| `signatures.json` | the signatures those entries name, with their HMAC seals |
| `design/<file>` | the design iteration's approved files (their SHA-256 is in dhr.json, with the build-file checks) |
| `manifest.json` | format, device, seal (audit seq, series SHA-256, points, range) and SHA-256 + size of every file above |

The manifest's SHA-256 is recorded in a `device_archived` audit entry (HMAC-chained after `device_sealed`) and a
`device_archives` row. Reading checks every hash; `dhr verify` compares InfluxDB with the archive point by point
(docs/decisions.md "Device archives")."""

from __future__ import annotations

import gzip
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.archive.reading import FORMAT, MANIFEST, SERIES, GzipSink, sha256
from server.archive.store import store_of
from server.audit.service import entry_fields, record, settings_of
from server.errors import Conflict, NotFound
from server.models import AuditEntry, Device, DeviceArchive, DeviceSeal, Job, Signature, utcnow
from server.security import SYSTEM, canonical_json
from server.stages import release_hooks
from server.timeseries.influx import InfluxQL, ident, literal

log = logging.getLogger("amtrace.archive")


def _gzip_lines(lines: list[str]) -> bytes:
    sink = GzipSink()
    for i in range(0, len(lines), 20_000):
        sink((("" if i == 0 else "\n") + "\n".join(lines[i:i + 20_000])).encode())
    return sink.value()


@dataclass
class _File:
    name: str
    data: bytes
    what: str


def _series_of_seal(session: Session, influx: InfluxQL, device: Device, seal: DeviceSeal,
                    series: Any) -> bytes:
    """series.txt.gz: from what the release read (when it is the sealed text), else read again and checked."""
    from server.history.seal import series_digest

    if series is not None and getattr(series, "points_gz", None) and series.digest.sha256 == seal.series_sha256:
        return series.points_gz
    sink = GzipSink()
    digest = series_digest(influx, device_code=device.device_code, start=seal.range_start, end=seal.range_end,
                           sink=sink)
    if digest.sha256 != seal.series_sha256:
        raise Conflict(f"InfluxDB no longer holds exactly the points sealed for {device.device_code} "
                       f"({digest.points} points now, {seal.point_count} sealed): its archive cannot be written from "
                       "InfluxDB (run amtrace-server dhr verify to see what changed)", code="archive_series_changed")
    return sink.value()


def _windows(session: Session, device: Device) -> list[tuple[str, str, datetime, datetime]]:
    """(name, machine, start, end) of the build and every cycle of the device."""
    from server.cycles.service import cycles_of_device
    from server.history.service import build_window

    w = build_window(session, device=device)
    out = [("build", w.machine_id, w.start, w.end)]
    for c in cycles_of_device(session, device_id=device.id):
        out.append((f"cycle {c.id}", c.machine_id, c.started_at, c.ended_at or utcnow()))
    return out


def _schema(influx: InfluxQL, measurements: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    ms = sorted(set(measurements))
    if not ms:
        return out
    answers = influx.query(*[q for m in ms
                             for q in (f"SHOW TAG KEYS FROM {ident(m)}", f"SHOW FIELD KEYS FROM {ident(m)}")])
    for i, m in enumerate(ms):
        tags = sorted(v[0] for s in answers[2 * i] for v in s.values)
        fields = {v[0]: v[1] for s in answers[2 * i + 1] for v in s.values}
        out[m] = {"tags": tags, "fields": dict(sorted(fields.items()))}
    return out


def _audit_and_signatures(session: Session, device: Device) -> tuple[bytes, bytes]:
    job = session.get(Job, device.job_id)
    # A job's entries from its creation on: SQLite may give a purged job's number to a later job.
    entries = list(session.scalars(select(AuditEntry).where(or_(
        AuditEntry.record_id == device.device_code,
        (AuditEntry.record_type == "job") & (AuditEntry.record_id == str(job.id))
        & (AuditEntry.at >= job.created_at))).order_by(AuditEntry.seq)))
    sig_ids: set[int] = set()

    def collect(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k.endswith("signature_id") and isinstance(x, int):
                    sig_ids.add(x)
                else:
                    collect(x)
        elif isinstance(v, list):
            for x in v:
                collect(x)

    lines = []
    for e in entries:
        collect(json.loads(e.new_values or "null"))
        lines.append(canonical_json({**entry_fields(e), "entry_hash": e.entry_hash}))
    sigs = list(session.scalars(select(Signature).where(or_(
        Signature.id.in_(sig_ids), Signature.record_id == device.device_code)).order_by(Signature.id)))
    sig_rows = [{"id": s.id, "user_id": s.user_id, "printed_name": s.printed_name, "signer_role": s.signer_role,
                 "meaning": s.meaning, "record_type": s.record_type, "record_id": s.record_id,
                 "record_sha256": s.record_sha256, "signed_at": s.signed_at.isoformat(), "seal": s.seal}
                for s in sigs]
    return ("\n".join(lines) + "\n").encode(), canonical_json(sig_rows).encode()


def _design_files(session: Session, device: Device) -> list[_File]:
    from pathlib import Path

    from server.models import DesignFile

    iteration = device.design_iteration_id or session.get(Job, device.job_id).design_iteration_id
    if iteration is None:
        return []
    store = Path(settings_of(session).file_store)
    out = []
    for f in session.scalars(select(DesignFile).where(DesignFile.iteration_id == iteration).order_by(DesignFile.id)):
        data = (store / f.sha256).read_bytes()
        if sha256(data) != f.sha256:
            raise Conflict(f"design file {f.file_name} in the file store no longer matches its SHA-256 {f.sha256}",
                           code="design_file_changed")
        out.append(_File(f"design/{f.file_name}", data, f"design file of iteration {iteration}"))
    return out


def collect(session: Session, influx: InfluxQL, *, device: Device, series: Any = None,
            archive_id: str = "") -> tuple[list[_File], dict]:
    """Every file of the device's archive and the manifest's description of the seal (reads only)."""
    from server.history.dhr import device_history_record
    from server.history.pdf import render_dhr_pdf
    from server.history.seal import _points, canonical_lines

    seal = session.scalar(select(DeviceSeal).where(DeviceSeal.device_id == device.id))
    if seal is None:
        raise Conflict(f"Device {device.device_code} is not sealed: only a released, sealed device is archived",
                       code="device_not_sealed")
    files = [_File(SERIES, _series_of_seal(session, influx, device, seal, series),
                   "every point under the device code in the sealed range (canonical text, gzip)")]
    measurements = {line.split("\t", 1)[0] for line in gzip.decompress(files[0].data).decode().split("\n") if line}
    windows = []
    for n, (name, machine, start, end) in enumerate(_windows(session, device), 1):
        where = (f"{ident('machine')} = {literal(machine)} AND {ident('device')} != {literal(device.device_code)}")
        lines = canonical_lines(_points(influx, where=where, start=start, end=end))
        measurements |= {line.split("\t", 1)[0] for line in lines}
        text = "\n".join(lines).encode()
        fname = f"window-{n}.txt.gz"
        files.append(_File(fname, _gzip_lines(lines), f"{name} on {machine}: points without this device code"))
        windows.append({"name": name, "machine_id": machine, "start": start.isoformat(), "end": end.isoformat(),
                        "file": fname, "points": len(lines), "text_sha256": sha256(text)})
    files.append(_File("machine-windows.json", canonical_json(windows).encode(),
                       "the machine windows: build and each cycle"))
    files.append(_File("schema.json", canonical_json(_schema(influx, measurements)).encode(),
                       "tag keys and field types per measurement"))
    from server.history.schemas import DhrArchive
    dhr = device_history_record(session, influx, actor=SYSTEM, device_code=device.device_code, plots=True)
    dhr.archive = DhrArchive(state="written", archive_id=archive_id, full_resolution=(
        f"{SERIES} in this archive (manifest.json holds every file's SHA-256)"))
    files.append(_File("dhr.json", dhr.model_dump_json(indent=1).encode(), "device history record (JSON)"))
    files.append(_File("dhr.pdf", render_dhr_pdf(dhr), "device history record (PDF)"))
    audit, sigs = _audit_and_signatures(session, device)
    files.append(_File("audit.jsonl", audit, "audit entries of the device and its job, with chain hashes"))
    files.append(_File("signatures.json", sigs, "signatures those entries name, with their seals"))
    files += _design_files(session, device)
    sealed = {"audit_seq": seal.audit_seq, "series_sha256": seal.series_sha256, "records_sha256": seal.records_sha256,
              "points": seal.point_count, "range_start": seal.range_start.isoformat(),
              "range_end": seal.range_end.isoformat()}
    return files, sealed


def write(session: Session, *, device_code: str, series: Any = None, influx: InfluxQL | None = None,
          progress: Callable[[str], None] = lambda s: None) -> DeviceArchive:
    """Write the archive of a sealed device (reads in a read transaction, then one short write transaction).

    series: what the release read (SeriesRead with points_gz), so a fresh release does not read its points twice."""
    from server.db import begin_read, end_read_transaction

    settings = settings_of(session)
    store = store_of(settings)
    own = influx is None
    influx = influx or InfluxQL.from_settings(settings)
    try:
        begin_read(session)
        try:
            device = session.scalar(select(Device).where(Device.device_code == device_code))
            if device is None:
                raise NotFound(f"No device {device_code}", code="device_not_found")
            if session.scalar(select(DeviceArchive.id).where(DeviceArchive.device_id == device.id)):
                raise Conflict(f"Device {device_code} is already archived", code="device_archived")
            progress(f"{device_code}: collecting")
            archive_id = f"{utcnow():%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
            files, sealed = collect(session, influx, device=device, series=series, archive_id=archive_id)
            device_id = device.id
        finally:
            end_read_transaction(session)
    finally:
        if own:
            influx.close()
    manifest = {"format": FORMAT, "device_code": device_code, "archive_id": archive_id,
                "written_at": utcnow().isoformat(), "seal": sealed,
                "files": {f.name: {"sha256": sha256(f.data), "bytes": len(f.data), "what": f.what} for f in files}}
    manifest_bytes = canonical_json(manifest).encode()
    total = sum(len(f.data) for f in files) + len(manifest_bytes)
    progress(f"{device_code}: writing {len(files) + 1} files, {total / 1e6:.1f} MB")
    # The manifest last: an archive whose manifest exists is complete (an interrupted one is left, unreferenced).
    for f in files + [_File(MANIFEST, manifest_bytes, "")]:
        store.put(f"{device_code}/{archive_id}/{f.name}", f.data)
    with session.begin():
        row = DeviceArchive(device_id=device_id, archive_id=archive_id, manifest_sha256=sha256(manifest_bytes),
                            files=len(files) + 1, size_bytes=total, written_at=utcnow(), audit_seq=0)
        session.add(row)
        session.flush()
        entry = record(session, actor=SYSTEM, action="device_archived", record_type="device", record_id=device_code,
                       new={"archive_id": archive_id, "manifest_sha256": row.manifest_sha256, "files": row.files,
                            "bytes": total, "location": store.location(f"{device_code}/{archive_id}/{MANIFEST}"),
                            "series_sha256": sealed["series_sha256"]})
        row.audit_seq = entry.seq
    return row


def pending(session: Session) -> list[str]:
    """Device codes of sealed devices without an archive."""
    return list(session.scalars(
        select(Device.device_code).join(DeviceSeal, DeviceSeal.device_id == Device.id)
        .where(~select(DeviceArchive.id).where(DeviceArchive.device_id == Device.id).exists())
        .order_by(Device.id)))


def write_pending(sessions, *, progress: Callable[[str], None] = lambda s: None) -> tuple[list[str], list[str]]:
    """Archive every sealed device without one: (archived, failed with why)."""
    with sessions() as session:
        codes = pending(session)
    done, failed = [], []
    for code in codes:
        with sessions() as session:
            try:
                write(session, device_code=code, progress=progress)
                done.append(code)
            except Exception as e:  # noqa: BLE001 - one device's failure (or another process archiving it
                # meanwhile) must not keep the others of the sweep from their archives
                session.rollback()
                failed.append(f"{code}: {getattr(e, 'detail', None) or f'{type(e).__name__}: {e}'}")
                log.warning("archive of %s not written: %s", code, failed[-1])
    return done, failed


def after_release(session: Session, device_id: int, prepared: dict[str, Any]) -> None:
    """Right after a release committed: write the archive (from the points the seal read, when it read them); a
    failure is logged and left for the sweep."""
    device_code = session.get(Device, device_id).device_code
    session.commit()  # the lookup's read; write() begins its own transactions
    try:
        write(session, device_code=device_code, series=prepared.get("device_history_record"))
    except Exception as e:  # the release stands; the DHR says the archive is missing until the sweep writes it
        session.rollback()
        log.warning("archive of %s not written at release (left for the sweep / amtrace-server dhr archive): %s",
                    device_code, getattr(e, "detail", None) or e)




release_hooks.subscribe(release_hooks.ReleaseSubscriber(
    name="device_archive", prepare=lambda session, device: None, accepted=lambda session, actor, device, p: None,
    committed=after_release))
