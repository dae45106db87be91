"""Reading a device's archive: every hash checked (manifest against its row and HMAC-checked audit entry, files
against the manifest, the series text against the seal), InfluxDB compared with it point by point, points exported
as line protocol. Imports no domain above it: the history (DHR, dhr verify) reads archives through this module."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.archive.store import DirectoryStore, store_of
from server.audit.service import entry_fields, register_stored_files, settings_of
from server.errors import Conflict, NotFound
from server.models import AuditEntry, Device, DeviceArchive
from server.timeseries.gaps import at_text

FORMAT = "amtrace-device-archive/1"
MANIFEST = "manifest.json"
SERIES = "series.txt.gz"


def sha256(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


class GzipSink:
    """Collects bytes as gzip (mtime 0: the same text always gives the same file)."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._parts: list[bytes] = []

    def __call__(self, chunk: bytes) -> None:
        self._parts.append(self._z.compress(chunk))

    def value(self) -> bytes:
        """The gzip file (call once)."""
        self._parts.append(self._z.flush())
        return b"".join(self._parts)


# --- reading -------------------------------------------------------------------------------------------------------

@dataclass
class ArchiveCheck:
    """What reading a device's archive found."""

    present: bool
    archive_id: str | None = None
    location: str | None = None
    problems: list[str] = field(default_factory=list)
    manifest: dict | None = None
    series_text: str | None = None  # the sealed canonical text, when its file is intact
    read: dict[str, bytes] = field(default_factory=dict)  # files read and found intact

    @property
    def intact(self) -> bool:
        """The archive exists and every hash matches."""
        return self.present and not self.problems


@register_stored_files
def _archive_manifests(session: Session):
    """audit verify checks each archive's manifest (dhr verify and backup verify check every file it lists)."""
    store = store_of(settings_of(session))
    if not isinstance(store, DirectoryStore):
        return
    for code, archive_id, sha in session.execute(
            select(Device.device_code, DeviceArchive.archive_id, DeviceArchive.manifest_sha256)
            .join(Device, Device.id == DeviceArchive.device_id).order_by(DeviceArchive.id)):
        yield f"archive manifest of device {code}", store.path(f"{code}/{archive_id}/{MANIFEST}"), sha


def row_of(session: Session, device_id: int) -> DeviceArchive | None:
    """The device's archive row, if written."""
    return session.scalar(select(DeviceArchive).where(DeviceArchive.device_id == device_id))


def check(session: Session, *, device: Device, series_sha256: str | None = None,
          only: set[str] | None = None) -> ArchiveCheck:
    """Read the device's archive and check every hash: the manifest against its row and audit entry (HMAC-checked),
    every file against the manifest (only: those files), the series text against the seal."""
    from server.security import seal as hmac_seal

    row = row_of(session, device.id)
    if row is None:
        return ArchiveCheck(False)
    settings = settings_of(session)
    store = store_of(settings)
    base = f"{device.device_code}/{row.archive_id}/"
    out = ArchiveCheck(True, row.archive_id, store.location(base + MANIFEST))
    entry = session.get(AuditEntry, row.audit_seq)
    if entry is None or entry.action != "device_archived" or entry.record_id != device.device_code or \
            not hmac.compare_digest(hmac_seal(settings.audit_key, entry_fields(entry)), entry.entry_hash) or \
            json.loads(entry.new_values).get("manifest_sha256") != row.manifest_sha256:
        out.problems.append(f"the audit entry {row.audit_seq} recording the archive is missing or does not match it")
    try:
        manifest_bytes = store.get(base + MANIFEST)
    except NotFound as e:
        out.problems.append(f"archive file {MANIFEST} missing: {e.detail}")
        return out
    if sha256(manifest_bytes) != row.manifest_sha256:
        out.problems.append(f"archive file {MANIFEST} changed: SHA-256 {sha256(manifest_bytes)}, recorded "
                            f"{row.manifest_sha256} ({out.location})")
        return out
    out.read[MANIFEST] = manifest_bytes
    out.manifest = manifest = json.loads(manifest_bytes)
    for name, meta in manifest["files"].items():
        if only is not None and name not in only:
            continue
        try:
            data = store.get(base + name)
        except NotFound as e:
            out.problems.append(f"archive file {name} missing: {e.detail}")
            continue
        if sha256(data) != meta["sha256"]:
            out.problems.append(f"archive file {name} changed: SHA-256 {sha256(data)}, manifest {meta['sha256']} "
                                f"({store.location(base + name)})")
            continue
        out.read[name] = data
        if name == SERIES:
            text = gzip.decompress(data).decode()
            if sha256(text.encode()) != (series_sha256 or manifest["seal"]["series_sha256"]):
                out.problems.append(f"archive file {name} does not hold the sealed points")
            else:
                out.series_text = text
    return out


def read_file(session: Session, *, device: Device, name: str) -> bytes:
    """One file of the device's archive, hash-checked against its manifest, the manifest against its audit entry
    (Conflict when either differs); no other file is read."""
    c = check(session, device=device, only={name})
    if not c.present:
        raise NotFound(f"Device {device.device_code} has no archive", code="archive_missing")
    if c.problems:
        raise Conflict("; ".join(c.problems), code="archive_damaged")
    if name not in c.read:
        raise NotFound(f"The archive of {device.device_code} has no file {name}", code="archive_file_missing")
    return c.read[name]


def compare(archived: str, now_lines: list[str]) -> tuple[list[str], list[str]]:
    """InfluxDB's points against the archive's: (problems, notes). Points only in the archive are expired or
    missing in InfluxDB (a note); points only in InfluxDB, or with other values, are problems, named exactly."""
    was = set(archived.split("\n")) - {""}
    now = set(now_lines)
    gone, added = was - now, now - was

    def key(line: str) -> tuple[str, int]:
        m, t, _ = line.split("\t", 2)
        return m, int(t)

    gone_keys, added_keys = {key(x) for x in gone}, {key(x) for x in added}
    changed = gone_keys & added_keys
    by_key: dict[tuple[str, int], tuple[dict, dict]] = {k: ({}, {}) for k in changed}
    for side, lines in ((0, gone), (1, added)):
        for x in lines:
            if (k := key(x)) in by_key:
                by_key[k][side].update(p.split("=", 1) for p in x.split("\t")[2:])
    problems = []
    for m, t in sorted(changed):
        sealed_now, influx_now = by_key[(m, t)]
        for k in sorted(set(sealed_now) | set(influx_now)):
            if sealed_now.get(k) != influx_now.get(k):
                problems.append(f"value changed: {m} field {k} at {at_text(t)}: sealed {sealed_now.get(k, '(none)')}, "
                                f"InfluxDB now {influx_now.get(k, '(none)')}")
    problems += [f"point added: {m} at {at_text(t)}" for m, t in sorted(added_keys - changed)]
    notes = []
    expired = sorted(k for k in gone_keys - changed)
    if expired:
        per = Counter(m for m, _ in expired)
        notes.append(f"{len(expired)} point(s) expired / missing in InfluxDB, archive intact ("
                     + ", ".join(f"{m}: {n}" for m, n in sorted(per.items()))
                     + f"; {at_text(min(t for _, t in expired))} to {at_text(max(t for _, t in expired))})")
    return problems, notes


# --- export --------------------------------------------------------------------------------------------------------

def _lp_escape(s: str, chars: str) -> str:
    s = s.replace("\\", "\\\\")
    for c in chars:
        s = s.replace(c, "\\" + c)
    return s


def to_line_protocol(text: str, schema: dict[str, Any]) -> Iterable[str]:
    """Line protocol of canonical lines (tags and field types from the archive's schema)."""
    for line in text.split("\n"):
        if not line:
            continue
        m, t, *pairs = line.split("\t")
        info = schema.get(m, {"tags": [], "fields": {}})
        tags, fields = [], []
        for p in pairs:
            k, v = p.split("=", 1)
            value = json.loads(v)
            if k in info["tags"]:
                tags.append(f"{_lp_escape(k, ',= ')}={_lp_escape(str(value), ',= ')}")
                continue
            kind = info["fields"].get(k)
            if isinstance(value, bool) or kind == "boolean":
                f = "true" if value else "false"
            elif kind == "integer":
                f = f"{int(value)}i"
            elif kind == "unsigned":
                f = f"{int(value)}u"
            elif kind == "string" or isinstance(value, str):
                f = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                f = repr(float(value))
            fields.append(f"{_lp_escape(k, ',= ')}={f}")
        if fields:
            yield f"{_lp_escape(m, ', ')}{''.join(',' + x for x in tags)} {','.join(fields)} {t}"
