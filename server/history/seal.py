"""Sealed device records: at release, a digest of every time-series point under the device code and of its
records is written into the audit chain; `amtrace-server dhr verify CODE` recomputes both.

Canonical serialisation of the time series: for each measurement holding points tagged with the device code,
every point in the sealed time range becomes one line `measurement<TAB>time_ns<TAB>key=value<TAB>…` with its
tags and fields sorted by key and values as InfluxDB's JSON gives them (json.dumps: exact shortest float repr,
strings quoted); lines are sorted by (measurement, time, text) and joined with newlines; SHA-256 of that.
A manifest (timestamps per measurement, and a hash per measurement × field × 10-second bucket) is stored in
the file store under its own SHA-256, which is sealed too, so verify can name what changed."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit.service import record, register_stored_files, settings_of
from server.errors import Conflict
from server.timeseries.gaps import at_text
from server.timeseries.influx import InfluxQL, TimeSeriesUnavailable, ident, literal, time_range
from server.models import AuditEntry, Device, DeviceSeal, utcnow
from server.security import SYSTEM, Principal, canonical_json, content_sha256
from server.stages import release_hooks

BUCKET_NS = 10 * 1_000_000_000
TAGS_NOT_HASHED = ()  # every tag and field is part of a point's identity and content
CLOCK_SKEW = timedelta(days=1)  # machine clocks may run behind the server's: read a day before the job


@dataclass
class SeriesDigest:
    """Digest, point count and manifest of a device's time series in a range."""

    sha256: str
    points: int
    manifest: dict[str, Any]


def _encoder():
    """json.dumps for the values InfluxDB's JSON gives, with fast paths (same text: floats are their repr)."""
    cache: dict[str, str] = {}
    dumps = json.dumps

    def enc(v: Any) -> str:
        t = type(v)
        if t is float:
            return float.__repr__(v) if v - v == 0.0 else dumps(v)
        if t is int:
            return int.__repr__(v)
        if t is str:
            r = cache.get(v)
            if r is None:
                r = dumps(v)
                if len(cache) < 10_000:
                    cache[v] = r
            return r
        return dumps(v)

    return enc


def device_where(device_code: str) -> str:
    """The InfluxQL condition of every point under a device code."""
    return f"{ident('device')} = {literal(device_code)}"


def _points(influx: InfluxQL, *, device_code: str | None = None, start: datetime, end: datetime,
            where: str | None = None) -> list[tuple[str, int, str, list[tuple[str, str]]]]:
    """Sorted (measurement, time, canonical key=value text, [(key, 'key=value'), ...]) of every point under the
    device code (or matching `where`, an InfluxQL condition on tags) in [start, end]."""
    where = where or device_where(device_code)
    (shown,) = influx.query(f"SHOW MEASUREMENTS WHERE {where}")
    measurements = sorted(v[0] for s in shown for v in s.values)
    if not measurements:
        return []
    answers = influx.query(*[f"SELECT * FROM {ident(m)} WHERE ({where}) AND "
                             f"{time_range(start, end)}" for m in measurements])
    enc = _encoder()
    out = []
    for m, series in zip(measurements, answers):
        for s in series:
            cols = s.columns
            names = [(i, cols[i].split("=", 1)[0], cols[i] + "=")
                     for i in sorted(range(1, len(cols)), key=lambda i: cols[i])]
            for row in s.values:
                pairs = [(c, p + enc(row[i])) for i, c, p in names if row[i] is not None]
                out.append((m, row[0], "\t".join([p for _, p in pairs]), pairs))
    out.sort(key=lambda p: (p[0], p[1], p[2]))
    return out


def canonical_lines(points) -> list[str]:
    """The canonical text lines of _points' points (what the seal hashes, joined by newlines)."""
    return [f"{m}\t{t}\t{kv}" for m, t, kv, _ in points]


def series_digest(influx: InfluxQL, *, device_code: str, start: datetime, end: datetime,
                  sink: Callable[[bytes], None] | None = None) -> SeriesDigest:
    """Canonical digest and manifest of every point under the device code in [start, end].

    sink: given every byte of the canonical text as it is hashed (the device archive keeps it, gzipped).
    Points are sorted by (measurement, time, text), so the points of one measurement × 10-second bucket are
    consecutive: each bucket's per-field hash is taken over its joined lines at once (the same bytes, in the
    same order, as hashing them one by one)."""
    h = hashlib.sha256()
    times: dict[str, list[int]] = {}
    buckets: dict[str, str] = {}
    points = _points(influx, device_code=device_code, start=start, end=end)
    group: dict[str, list[str]] = {}
    gkey: tuple[str, int] | None = None

    def close() -> None:
        for col, parts in group.items():
            buckets[f"{gkey[0]}|{col}|{gkey[1]}"] = hashlib.sha256("".join(parts).encode()).hexdigest()[:16]

    def feed(chunk: bytes) -> None:
        h.update(chunk)
        if sink is not None:
            sink(chunk)

    lines: list[str] = []
    first = True
    for m, t, kv, pairs in points:
        lines.append(f"{m}\t{t}\t{kv}")
        if len(lines) >= 20_000:
            feed((("" if first else "\n") + "\n".join(lines)).encode())
            first, lines = False, []
        tl = times.get(m)
        if tl is None:
            tl = times[m] = []
        tl.append(t)
        key = (m, t // BUCKET_NS)
        if key != gkey:
            if gkey is not None:
                close()
            gkey, group = key, {}
        ts = f"{t}="
        for col, pair in pairs:
            g = group.get(col)
            if g is None:
                g = group[col] = []
            g.append(f"{ts}{pair}\n")
    if lines:
        feed((("" if first else "\n") + "\n".join(lines)).encode())
    if gkey is not None:
        close()
    manifest = {"times": times, "buckets": buckets}
    return SeriesDigest(h.hexdigest(), sum(len(v) for v in times.values()), manifest)


def records_sections(session: Session, influx: InfluxQL, *, device: Device, as_of: datetime) -> dict[str, str]:
    """SHA-256 per DHR records section as of the seal time (later deliveries and complaints are not sealed)."""
    from server.history.dhr import device_history_record

    dhr = device_history_record(session, influx, actor=SYSTEM, device_code=device.device_code, plots=False,
                                monitoring=False)
    data = dhr.model_dump(mode="json", exclude={"generated_at", "generated_by", "process_monitoring", "seal",
                                                  "delivery", "unrecorded_process_data", "unrecorded_check",
                                                  "local_overrides", "retention", "archive",
                                                  "retained_samples"})
    data["device"].pop("state"), data["device"].pop("status")
    stages = data.pop("stages")
    cut = next((i for i, s in enumerate(stages) if s["stage"] == "release"), len(stages) - 1)
    data["stages"] = stages[:cut + 1]
    data["nonconformities"] = [{k: v for k, v in n.items() if k != "scope"} for n in data["nonconformities"]
                               if datetime.fromisoformat(n["raised_at"].replace("Z", "+00:00")) <= as_of]
    for c in data["cycles"]:
        # Read from InfluxDB (or the stored summary), not records; left out so seals made before they
        # existed still verify.
        c.pop("plot", None)
        c.pop("data_gaps", None)
    # Nonconformities of the device's machine, lot or design iteration: records of their own (audited and
    # signed), shown in the DHR; sealed sections stay what they were.
    data.pop("related_nonconformities", None)
    return {k: content_sha256(v) for k, v in sorted(data.items())}


def _manifest_path(session: Session, sha: str) -> Path:
    return Path(settings_of(session).file_store) / "seals" / f"{sha}.json.gz"


@register_stored_files
def _seal_manifests(session: Session):
    for device_id, sha in session.execute(select(DeviceSeal.device_id, DeviceSeal.manifest_sha256)):
        yield f"seal manifest of device {device_id}", _manifest_path(session, sha), sha


@dataclass
class SeriesRead:
    """The InfluxDB half of a seal (digest of every point, build summary), read before the write transaction."""

    device_id: int
    start: datetime
    end: datetime
    digest: SeriesDigest
    summary: Any | None  # None when the device already has a stored summary
    points_gz: bytes | None = None  # the canonical text digest.sha256 hashes, gzipped (for the device archive)


def read_series(session: Session, *, device: Device, influx: InfluxQL | None = None) -> SeriesRead:
    """Read what a seal needs from InfluxDB up to now (tens of seconds for a long 10 Hz build).

    Call it before the transaction that stores the seal (stages.service.read_release_series): on SQLite
    a write transaction holds the database's one write lock, and gate decisions must not wait for this.
    """
    from server.history import summaries
    from server.models import Job

    own = influx is None
    influx = influx or InfluxQL.from_settings(settings_of(session))
    try:
        now = utcnow()
        start = session.get(Job, device.job_id).created_at - CLOCK_SKEW
        summary = None
        if summaries.stored_row(session, device=device) is None:
            summary = summaries.compute(session, influx, device=device)
        from server.archive.reading import GzipSink
        sink = GzipSink()
        digest = series_digest(influx, device_code=device.device_code, start=start, end=now, sink=sink)
    finally:
        if own:
            influx.close()
    return SeriesRead(device_id=device.id, start=start, end=now, digest=digest, summary=summary,
                      points_gz=sink.value())


def seal_device(session: Session, *, actor: Principal, device: Device, influx: InfluxQL | None = None,
                series: SeriesRead | None = None) -> DeviceSeal:
    """Compute and record the seal of a device being released (audit entry device_sealed), and store its build
    summary (audit entry build_summary_stored) so its DHR reads no raw points from then on.

    series: the device's time series as read_series read them just before; read here when not given.
    """
    from server.history import summaries

    if session.scalar(select(DeviceSeal).where(DeviceSeal.device_id == device.id)) is not None:
        raise Conflict(f"Device {device.device_code} is already sealed", code="device_sealed")
    own = influx is None
    influx = influx or InfluxQL.from_settings(settings_of(session))
    try:
        # Every InfluxDB read first, so an unreachable InfluxDB defers the whole seal (nothing half-written).
        if series is None or series.device_id != device.id:
            series = read_series(session, device=device, influx=influx)
        sections = records_sections(session, influx, device=device, as_of=series.end)
    finally:
        if own:
            influx.close()
    start, now, digest = series.start, series.end, series.digest
    blob = gzip.compress(canonical_json(digest.manifest).encode(), compresslevel=6, mtime=0)
    manifest_sha = hashlib.sha256(blob).hexdigest()
    path = _manifest_path(session, manifest_sha)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    records_sha = content_sha256(sections)
    entry = record(session, actor=actor, action="device_sealed", record_type="device", record_id=device.device_code,
                   new={"range_start": start.isoformat(), "range_end": now.isoformat(), "points": digest.points,
                        "series_sha256": digest.sha256, "records_sha256": records_sha, "sections": sections,
                        "manifest_sha256": manifest_sha})
    seal = DeviceSeal(device_id=device.id, sealed_at=now, range_start=start, range_end=now,
                      point_count=digest.points, series_sha256=digest.sha256, records_sha256=records_sha,
                      manifest_sha256=manifest_sha, audit_seq=entry.seq)
    session.add(seal)
    session.flush()
    if series.summary is not None and summaries.stored_row(session, device=device) is None:
        summaries.save(session, actor=actor, device=device, summary=series.summary)
    return seal


def seal_on_release(session: Session, *, actor: Principal, device: Device,
                    series: SeriesRead | TimeSeriesUnavailable | None = None) -> DeviceSeal | None:
    """Release hook: seal the device; when InfluxDB is unreachable, record that the seal is deferred.

    series: what stages.service.read_release_series read before the transaction (or found unreachable).
    """
    try:
        if isinstance(series, TimeSeriesUnavailable):
            raise series
        return seal_device(session, actor=actor, device=device, series=series)
    except TimeSeriesUnavailable as e:
        record(session, actor=actor, action="device_seal_deferred", record_type="device",
               record_id=device.device_code, new={"why": e.detail},
               reason="InfluxDB unavailable at release; run amtrace-server dhr seal " + device.device_code)
        return None


@dataclass
class SealCheck:
    """What `dhr verify` found."""

    device_code: str
    sealed: bool
    points: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""  # where the sealed points were checked: "InfluxDB …" or "archive"

    @property
    def ok(self) -> bool:
        """True when the device is sealed and nothing changed."""
        return self.sealed and not self.problems


def verify_device(session: Session, influx: InfluxQL, *, device_code: str) -> SealCheck:
    """Recompute a released device's digests and name every point changed, added or deleted since release."""
    from server.audit.service import entry_fields
    from server.security import seal as hmac_seal
    import hmac

    device = session.scalar(select(Device).where(Device.device_code == device_code))
    if device is None:
        return SealCheck(device_code, False, problems=[f"no device {device_code}"])
    seal = session.scalar(select(DeviceSeal).where(DeviceSeal.device_id == device.id))
    if seal is None:
        return SealCheck(device_code, False, problems=[f"device {device_code} has not been sealed (not released)"])
    check = SealCheck(device_code, True)
    entry = session.get(AuditEntry, seal.audit_seq)
    if entry is None or entry.action != "device_sealed" or entry.record_id != device_code or not hmac.compare_digest(
            hmac_seal(settings_of(session).audit_key, entry_fields(entry)), entry.entry_hash):
        check.problems.append(f"the audit entry {seal.audit_seq} holding the seal is missing or was altered")
        return check
    sealed = json.loads(entry.new_values)
    start, end = datetime.fromisoformat(sealed["range_start"]), datetime.fromisoformat(sealed["range_end"])
    from server.archive import reading as archive
    arch = archive.check(session, device=device, series_sha256=sealed["series_sha256"])
    check.problems.extend(arch.problems)
    chunks: list[bytes] = []
    try:
        now = series_digest(influx, device_code=device_code, start=start, end=end,
                            sink=chunks.append if arch.series_text is not None else None)
    except TimeSeriesUnavailable as e:
        if arch.series_text is None:
            raise
        check.source = "archive"
        check.points = sealed["points"]
        check.notes.append(f"InfluxDB not read ({e.detail}): the sealed points were checked in the archive only")
    else:
        check.points = now.points
        if now.sha256 == sealed["series_sha256"]:
            check.source = "InfluxDB" + (" (the archive holds the same points)" if arch.series_text else "")
        elif arch.series_text is not None:
            # The archive holds the sealed points themselves: compare point by point, so points InfluxDB no
            # longer has (retention, a dropped database) are told apart from points added or changed.
            problems, notes = archive.compare(arch.series_text, b"".join(chunks).decode().split("\n")
                                              if chunks else [])
            check.problems.extend(problems)
            check.notes.extend(notes)
            check.source = "archive"
            check.points = sealed["points"]
        else:
            check.source = "InfluxDB"
            check.problems.extend(_name_changes(session, sealed, now))
    if arch.present:
        if arch.intact:
            check.notes.append(f"archive {arch.archive_id} intact: every file matches its manifest, the manifest its "
                               f"audit entry ({arch.location})")
    else:
        check.notes.append(f"no archive written for {device_code} (amtrace-server dhr archive {device_code} writes it)")
    sections = records_sections(session, influx, device=device, as_of=end)
    for name, sha in sealed["sections"].items():
        if sections.get(name) != sha:
            check.problems.append(f"records section '{name}' changed since release")
    from server.history import summaries
    row = summaries.stored_row(session, device=device)
    if row is None:
        check.notes.append("no stored build summary (sealed before summaries were stored: amtrace-server dhr "
                           "summarize stores one); its DHR computes the summary live")
    else:
        found = summaries.check(session, device=device, row=row)
        check.problems.extend(found)
        if not found:
            check.notes.append(f"stored build summary intact (SHA-256 {row.summary_sha256}, audit entry "
                               f"{row.audit_seq})")
    return check


def _name_changes(session: Session, sealed: dict, now: SeriesDigest) -> list[str]:
    path = _manifest_path(session, sealed["manifest_sha256"])
    if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sealed["manifest_sha256"]:
        return [f"the time series differ from the sealed digest ({sealed['points']} points sealed, {now.points} now); "
                f"the manifest that would name the points is missing or altered"]
    old = json.loads(gzip.decompress(path.read_bytes()))
    problems = []
    for m in sorted(set(old["times"]) | set(now.manifest["times"])):
        was, nowt = set(old["times"].get(m, [])), set(now.manifest["times"].get(m, []))
        problems += [f"point deleted: {m} at {at_text(t)}" for t in sorted(was - nowt)]
        problems += [f"point added: {m} at {at_text(t)}" for t in sorted(nowt - was)]
        changed_times = was ^ nowt
        for key in sorted(set(old["buckets"]) | set(now.manifest["buckets"])):
            mm, col, b = key.split("|")
            if mm != m or old["buckets"].get(key) == now.manifest["buckets"].get(key):
                continue
            lo, hi = int(b) * BUCKET_NS, (int(b) + 1) * BUCKET_NS
            if any(lo <= t < hi for t in changed_times):
                continue  # explained by an added or deleted point
            problems.append(f"value changed: {m} field {col} in a point between {at_text(lo)} and {at_text(hi)}")
    return problems or ["the time series differ from the sealed digest"]


def _prepare_release(session: Session, device: Device) -> SeriesRead | TimeSeriesUnavailable:
    try:
        return read_series(session, device=device)
    except TimeSeriesUnavailable as e:
        return e  # the seal is then deferred, and says why


# The record seals itself when a release is accepted: the stages announce, they do not call history.
release_hooks.subscribe(release_hooks.ReleaseSubscriber(
    name="device_history_record", prepare=_prepare_release,
    accepted=lambda session, actor, device, prepared: seal_on_release(session, actor=actor, device=device,
                                                                      series=prepared)))
