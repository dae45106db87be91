"""Build history queries (SQL records) and per-build signal summaries read from InfluxDB with InfluxQL."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import Session

from server.errors import Conflict, NotFound
from server.timeseries.gaps import EVENTS, data_gaps, datetime_from_ns
from server.timeseries.influx import InfluxQL, ident, literal, ns, time_range
from server.history.schemas import (BuildEvent, BuildRow, BuildSummary, HistoryPage, PlotExcursion, PlotSeries,
                                    SignalSummary)
from server.models import (Design, DesignIteration, Device, Job, MaterialLot, Nonconformity, StageStep, utcnow)

STATUSES = ("released", "blocked", "nonconforming", "in_production", "delivered", "scrapped")
SORTS = {"started": Job.created_at, "device_code": Device.device_code, "machine": Job.machine_id}
NUMERIC = ("float", "int")
MAX_PLOT_POINTS = 400
SIGNAL_MAP = "amtrace_signal_map"


def _open_nc(device=Device):
    return exists().where(Nonconformity.state == "open", or_(
        Nonconformity.device_id == device.id,
        and_(Nonconformity.job_id == device.job_id, Nonconformity.device_id.is_(None))))


def _any_nc(device=Device):
    return exists().where(or_(Nonconformity.device_id == device.id,
                              and_(Nonconformity.job_id == device.job_id, Nonconformity.device_id.is_(None))))


def _released(device=Device):
    return exists().where(StageStep.device_id == device.id, StageStep.stage == "release",
                          StageStep.state == "accepted")


def build_history(session: Session, *, device_code: str | None = None, machine_id: str | None = None,
                  material_lot: str | None = None, job: str | None = None, design_iteration_id: int | None = None,
                  since: datetime | None = None, until: datetime | None = None, status: str | None = None,
                  sort: str = "-started", page: int = 1, page_size: int = 50) -> HistoryPage:
    """Devices and the builds that made them, filtered, sorted and paginated.

    Device code, machine and lot match case-insensitively from the start ("amt-2026", "lpbf"); job takes a job
    number as people write it ("12", "JOB-12")."""
    key = sort.lstrip("-")
    if key not in SORTS:
        raise Conflict(f"sort must be one of {', '.join(SORTS)} (prefix - for descending), not {sort!r}",
                       code="history_sort")
    if status is not None and status not in STATUSES:
        raise Conflict(f"status must be one of {', '.join(STATUSES)}, not {status!r}", code="history_status")
    open_nc, any_nc, released = _open_nc().label("open_nc"), _any_nc().label("any_nc"), _released().label("rel")
    q = (select(Device, Job, MaterialLot.lot_number, DesignIteration.number, Design.name, open_nc, any_nc, released)
         .join(Job, Job.id == Device.job_id).join(MaterialLot, MaterialLot.id == Job.material_lot_id)
         .outerjoin(DesignIteration, DesignIteration.id == Device.design_iteration_id)
         .outerjoin(Design, Design.id == DesignIteration.design_id))
    conds = []
    if device_code:
        conds.append(Device.device_code.istartswith(device_code.strip(), autoescape=True))
    if machine_id:
        conds.append(Job.machine_id.istartswith(machine_id.strip(), autoescape=True))
    if material_lot:
        conds.append(MaterialLot.lot_number.istartswith(material_lot.strip(), autoescape=True))
    if job:
        number = job.strip().upper().removeprefix("JOB").strip(" -#")
        if not number.isdigit() or len(number) > 18:
            raise Conflict(f"job must be a job number such as 12 or JOB-12, not {job!r}", code="history_job")
        conds.append(Job.id == int(number))
    if design_iteration_id is not None:
        conds.append(Device.design_iteration_id == design_iteration_id)
    if since:
        conds.append(Job.created_at >= since)
    if until:
        conds.append(Job.created_at <= until)
    if status == "blocked":
        conds.append(_open_nc())
    elif status == "nonconforming":
        conds.append(_any_nc())
    elif status == "released":
        conds.append(_released())
    elif status in ("in_production", "delivered", "scrapped"):
        conds.append(Device.state == status)
    q = q.where(*conds)
    total = session.scalar(select(func.count()).select_from(Device).join(Job, Job.id == Device.job_id)
                           .join(MaterialLot, MaterialLot.id == Job.material_lot_id).where(*conds))
    col = SORTS[key]
    q = q.order_by(col.desc() if sort.startswith("-") else col.asc(), Device.id)
    q = q.offset((page - 1) * page_size).limit(page_size)
    rows = []
    for device, job, lot, it_no, design_name, is_open, has_nc, is_released in session.execute(q):
        rows.append(BuildRow(
            device_code=device.device_code, kind=device.kind, job_id=job.id, machine_id=job.machine_id,
            material_lot=lot, design_name=design_name, design_iteration_id=device.design_iteration_id,
            design_iteration=it_no, build_started_at=job.created_at, device_state=device.state,
            status=device_status(device.state, bool(is_open), bool(is_released)), nonconforming=bool(has_nc)))
    return HistoryPage(total=total, page=page, page_size=page_size, sort=sort, items=rows)


def device_status(state: str, blocked: bool, released: bool) -> str:
    """One status word: scrapped, blocked, delivered, released or in production."""
    if state == "scrapped":
        return "scrapped"
    if blocked:
        return "blocked"
    if state == "delivered":
        return "delivered"
    return "released" if released else "in_production"


@dataclass
class BuildWindow:
    """Where and when a device was built: the bounds of every InfluxDB read about its build."""

    machine_id: str
    job_id: int
    start: datetime
    end: datetime


def build_window(session: Session, *, device: Device) -> BuildWindow:
    """From the job's creation (no device-tagged point can be older) to the build step's completion (or now)."""
    job = session.get(Job, device.job_id)
    build = session.scalar(select(StageStep).where(StageStep.device_id == device.id, StageStep.stage == "build"))
    end = build.completed_at if build is not None and build.completed_at else utcnow()
    return BuildWindow(job.machine_id, job.id, job.created_at, end)


def device_by_code(session: Session, device_code: str) -> Device:
    """The device with this code, or NotFound."""
    device = session.scalar(select(Device).where(Device.device_code == device_code))
    if device is None:
        raise NotFound(f"No device {device_code}", code="device_not_found")
    return device


def signal_catalogue(influx: InfluxQL, *, machine_id: str, until: datetime) -> dict[tuple[str, str], dict]:
    """(measurement, field) -> signal, unit, type and limits, as the machine's agent last declared them."""
    (series,) = influx.query(f"SELECT * FROM {SIGNAL_MAP} WHERE {ident('machine')} = {literal(machine_id)} "
                             f"AND time <= {ns(until)}")
    out: dict[tuple[str, str], dict] = {}
    for s in series:
        for row in s.rows():  # time order: the last declaration wins
            out[(row["measurement"], row["field"])] = row
    return out


def _limits(entry: dict) -> dict[str, float]:
    return {k: float(entry[k]) for k in ("warn_low", "warn_high", "alarm_low", "alarm_high")
            if entry.get(k) is not None}


def _outside(field: str, lo: float | None, hi: float | None) -> str | None:
    parts = []
    if hi is not None:
        parts.append(f"{ident(field)} > {hi!r}")
    if lo is not None:
        parts.append(f"{ident(field)} < {lo!r}")
    return " OR ".join(parts) or None


def signal_summaries(influx: InfluxQL, *, machine_id: str, device_code: str, start: datetime, end: datetime,
                     catalogue: dict[tuple[str, str], dict]) -> list[SignalSummary]:
    """Min, max, mean, samples and time outside warning/alarm limits of each numeric signal of the build.

    Time outside limits = samples outside × the signal's mean sampling interval ((last − first) / (n − 1)):
    the edge samples at a steady rate, and this needs only counts from InfluxDB, not the raw points."""
    where = (f"{ident('machine')} = {literal(machine_id)} AND {ident('device')} = {literal(device_code)} AND "
             f"{time_range(start, end)}")
    by_measurement: dict[str, list[tuple[str, dict]]] = {}
    for (m, f), entry in sorted(catalogue.items()):
        if entry.get("type") in NUMERIC:
            by_measurement.setdefault(m, []).append((f, entry))
    statements: list[str] = []
    plan: list[tuple[str, Any]] = []
    for m, fields in by_measurement.items():
        aggs = ", ".join(f"min({ident(f)}) AS {ident(f + '|min')}, max({ident(f)}) AS {ident(f + '|max')}, "
                         f"mean({ident(f)}) AS {ident(f + '|mean')}, count({ident(f)}) AS {ident(f + '|count')}"
                         for f, _ in fields)
        statements.append(f"SELECT {aggs} FROM {ident(m)} WHERE {where}")
        plan.append(("aggs", m))
        first_field = fields[0][0]
        statements.append(f"SELECT first({ident(first_field)}) FROM {ident(m)} WHERE {where}")
        plan.append(("first", m))
        statements.append(f"SELECT last({ident(first_field)}) FROM {ident(m)} WHERE {where}")
        plan.append(("last", m))
        for f, entry in fields:
            lim = _limits(entry)
            for level in ("warn", "alarm"):
                cond = _outside(f, lim.get(f"{level}_low"), lim.get(f"{level}_high"))
                if cond:
                    statements.append(f"SELECT count({ident(f)}) FROM {ident(m)} WHERE {where} AND ({cond})")
                    plan.append((level, (m, f)))
    answers = influx.query(*statements) if statements else []
    aggs: dict[str, dict] = {}
    span: dict[str, dict[str, int]] = {}
    outside: dict[tuple[str, str, str], int] = {}
    for (kind, key), series in zip(plan, answers):
        row = series[0].rows()[0] if series and series[0].values else None
        if kind == "aggs":
            aggs[key] = row or {}
        elif kind in ("first", "last"):
            if row:
                span.setdefault(key, {})[kind] = row["time"]
        else:
            outside[(key[0], key[1], kind)] = int(row["count"]) if row else 0
    out = []
    for m, fields in by_measurement.items():
        a = aggs.get(m, {})
        sp = span.get(m, {})
        for f, entry in fields:
            n = int(a.get(f + "|count") or 0)
            interval = ((sp["last"] - sp["first"]) / 1e9 / (n - 1)) if n > 1 and "first" in sp else 0.0
            out.append(SignalSummary(
                measurement=m, field=f, signal=entry.get("signal") or f, unit=entry.get("unit") or "",
                limits=_limits(entry), samples=n, min=a.get(f + "|min"), max=a.get(f + "|max"),
                mean=a.get(f + "|mean"),
                seconds_outside_warning=round(outside.get((m, f, "warn"), 0) * interval, 3),
                seconds_outside_alarm=round(outside.get((m, f, "alarm"), 0) * interval, 3),
                samples_outside_warning=outside.get((m, f, "warn"), 0),
                samples_outside_alarm=outside.get((m, f, "alarm"), 0)))
    return out


def events_of(influx: InfluxQL, *, machine_id: str, device_code: str, start: datetime, end: datetime
              ) -> list[BuildEvent]:
    """Every event (excursion, excursion end, gap, connection lost, build-file check, ...) under the device code."""
    (series,) = influx.query(
        f"SELECT * FROM {EVENTS} WHERE {ident('machine')} = {literal(machine_id)} AND "
        f"{ident('device')} = {literal(device_code)} AND {time_range(start, end)}")
    out = []
    for s in series:
        for r in s.rows():
            out.append(BuildEvent(at=datetime_from_ns(r["time"]), kind=r.get("kind") or "", severity=r.get("severity")
                                  or "info", signal=r.get("signal"), message=r.get("message") or "",
                                  value=_num(r.get("value")), limit=_num(r.get("limit"))))
    return out


# What a reader should conclude from the recovery the agent recorded; a gap without one (older agents) is lost.
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def plot_series(influx: InfluxQL, *, machine_id: str, device_code: str, start: datetime, end: datetime,
                fields: list[tuple[str, str, str, str, dict[str, float]]]) -> list[PlotSeries]:
    """Signals over time for plots: mean, minimum and maximum per interval, at most MAX_PLOT_POINTS intervals each,
    and every excursion beyond a limit found in the extremes (a mean alone hid a one-sample alarm spike).

    fields: (measurement, field, label, unit, limits)."""
    seconds = max(1, int((ns(end) - ns(start)) / 1e9 / MAX_PLOT_POINTS) + 1)
    where = (f"{ident('machine')} = {literal(machine_id)} AND {ident('device')} = {literal(device_code)} AND "
             f"{time_range(start, end)}")
    statements = [f"SELECT mean({ident(f)}), min({ident(f)}), max({ident(f)}) FROM {ident(m)} WHERE {where} "
                  f"GROUP BY time({seconds}s) fill(none)" for m, f, *_ in fields]
    out = []
    for (m, f, label, unit, limits), series in zip(fields, influx.query(*statements)):
        pts = [(row[0], row[1], row[2], row[3]) for s in series for row in s.values if row[1] is not None]
        times, lows, highs = [p[0] for p in pts], [p[2] for p in pts], [p[3] for p in pts]
        out.append(PlotSeries(measurement=m, field=f, label=label, unit=unit, limits=limits, times_ns=times,
                              values=[p[1] for p in pts], lows=lows, highs=highs,
                              excursions=plot_excursions(times, lows, highs, limits, step_ns=seconds * 10**9)))
    return out


def plot_excursions(times: list[int], lows: list[float], highs: list[float], limits: dict[str, float], *,
                    step_ns: int) -> list[PlotExcursion]:
    """Stretches of consecutive intervals beyond each limit, by severity and side, with the extreme value."""
    found: list[PlotExcursion] = []
    for key, limit in limits.items():
        if key not in ("warn_low", "warn_high", "alarm_low", "alarm_high"):
            continue
        severity, side = ("alarm" if key.startswith("alarm") else "warning"), key.split("_")[1]
        beyond = [(hi > limit) if side == "high" else (lo < limit) for lo, hi in zip(lows, highs)]
        i = 0
        while i < len(times):
            if not beyond[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(times) and beyond[j + 1] and times[j + 1] - times[j] <= step_ns:
                j += 1
            extreme = max(highs[i:j + 1]) if side == "high" else min(lows[i:j + 1])
            found.append(PlotExcursion(start_ns=times[i], end_ns=times[j] + step_ns, severity=severity, side=side,
                                       limit=limit, extreme=extreme))
            i = j + 1
    return sorted(found, key=lambda e: (e.start_ns, e.severity != "alarm"))


def build_summary(session: Session, influx: InfluxQL, *, device_code: str, plots: bool = False) -> BuildSummary:
    """Every numeric signal's summary and every event of the build that made the device."""
    device = device_by_code(session, device_code)
    w = build_window(session, device=device)
    catalogue = signal_catalogue(influx, machine_id=w.machine_id, until=w.end)
    summaries = signal_summaries(influx, machine_id=w.machine_id, device_code=device_code, start=w.start,
                                 end=w.end, catalogue=catalogue)
    events = events_of(influx, machine_id=w.machine_id, device_code=device_code, start=w.start, end=w.end)
    series: list[PlotSeries] = []
    if plots:
        key = [s for s in summaries if s.limits and s.samples][:6] or [s for s in summaries if s.samples][:4]
        series = plot_series(influx, machine_id=w.machine_id, device_code=device_code, start=w.start, end=w.end,
                             fields=[(s.measurement, s.field, s.signal, s.unit, s.limits) for s in key])
    return BuildSummary(device_code=device_code, machine_id=w.machine_id, job_id=w.job_id, start=w.start, end=w.end,
                        signals=summaries, events=events, plots=series,
                        data_gaps=data_gaps(influx, machine_id=w.machine_id, start=w.start, end=w.end))


def unrecorded_process_data(influx: InfluxQL, *, device_code: str, build_machine: str,
                            recorded: list[tuple[str, datetime, datetime | None]]) -> list:
    """Stretches of data under the device code on machines other than the build machine that no recorded cycle
    covers (recorded: machine, start, end of each cycle), by minute: a DHR must say there is process data it has
    no cycle for, not "no cycles"."""
    from datetime import timedelta

    from server.history.schemas import DhrUnrecordedData

    (series,) = influx.query(f"SHOW SERIES WHERE {ident('device')} = {literal(device_code)}")
    pairs = set()
    for s in series:
        for row in s.values:
            key = str(row[0])
            measurement, _, tags = key.partition(",")
            tag = dict(t.split("=", 1) for t in tags.split(",") if "=" in t)
            if measurement not in (EVENTS, SIGNAL_MAP) and tag.get("machine") and tag["machine"] != build_machine:
                pairs.add((measurement, tag["machine"]))
    if not pairs:
        return []
    ordered = sorted(pairs)
    statements = [f"SELECT count(*) FROM {ident(m)} WHERE {ident('device')} = {literal(device_code)} AND "
                  f"{ident('machine')} = {literal(machine)} GROUP BY time(60s) fill(none)" for m, machine in ordered]
    out = []
    minute = timedelta(seconds=60)
    for (measurement, machine), result in zip(ordered, influx.query(*statements)):
        windows = [(a, b or utcnow()) for mid, a, b in recorded if mid == machine]
        minutes = sorted(datetime_from_ns(row[0]) for s in result for row in s.values
                         if any(isinstance(v, (int, float)) and v for v in row[1:]))
        # A minute with data, not inside any recorded cycle (a minute bucket overlapping a cycle counts as in it).
        loose = [t for t in minutes if not any(a - minute < t <= b for a, b in windows)]
        stretch: list[datetime] = []
        for t in loose + [None]:
            if stretch and (t is None or t - stretch[-1] > minute):
                out.append(DhrUnrecordedData(machine_id=machine, measurement=measurement, start=stretch[0],
                                             end=stretch[-1] + minute, minutes=len(stretch)))
                stretch = []
            if t is not None:
                stretch.append(t)
    return sorted(out, key=lambda u: (u.start, u.machine_id))


def case_of(session: Session, device: Device):
    """The case a device is made for (None for a coupon or a stock part)."""
    from server.models import Case

    return session.get(Case, device.case_id) if device.case_id is not None else None
