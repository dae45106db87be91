"""Validated cycle recipes, process cycles on loads of devices, and manual post-processing steps.

A recipe is versioned and approved by a quality engineer's signature; a cycle records the recipe version
it ran with and is evaluated, when it completes, from the machine's time series in InfluxDB between its
recorded start and end; a failed cycle raises a nonconformity on every device of the load."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server.audit.service import record, register_record_hasher, register_stored_files, settings_of
from server.auth.esign import sign
from server.competence import require_authorised
from server.cycles.evaluation import ResidueResult, Trace, Verdict, evaluate
from server.cycles.recipes import RecipeParameters, parse_parameters
from server.cycles.schemas import MeasurementIn, PhotoIn
from server.errors import Conflict, NotFound
from server.timeseries.influx import InfluxQL, ident, literal, time_range
from server.timeseries.gaps import data_gaps
from server.images import check_photo
from server.models import (Agent, AgentMachine, CycleLoadItem, CycleRecipe, Device, Machine, ManualStep,
                           Nonconformity, ProcessCycle, Signature, utcnow)
from server.nonconformities.service import machine_wide, raise_nonconformity
from server.security import SYSTEM, Principal, content_sha256
from server.db import get_or_not_found

MANUAL_KINDS = ("support_removal", "surface_finishing", "inspection", "rework", "other")
NC_KIND_OF_STEP = {"inspection": "dimensional", "surface_finishing": "surface", "support_removal": "surface",
                   "rework": "other", "other": "other"}
# An agent further behind than this (received, not yet stored) is holding readings a verdict needs.
READINGS_LAG_NS = 10 * 1_000_000_000
MAX_CYCLE = timedelta(days=7)  # a longer interval is a typo, and would make an unbounded InfluxDB read


# --- recipes -----------------------------------------------------------------------------------

def recipe_content(r: CycleRecipe) -> dict[str, Any]:
    """What a recipe approval signature binds to."""
    return {"id": r.id, "name": r.name, "version": r.version, "process": r.process, "parameters": r.parameters}


@register_stored_files
def _step_photos(session: Session):
    folder = Path(settings_of(session).file_store) / "photos"
    for step_id, photos in session.execute(select(ManualStep.id, ManualStep.photos).order_by(ManualStep.id)):
        for p in photos or []:
            if isinstance(p, dict) and p.get("sha256"):
                yield f"photo {p.get('file_name')} of manual step {step_id}", folder / p["sha256"], p["sha256"]


@register_record_hasher("cycle_recipe")
def _rehash_recipe(session: Session, record_id: str) -> str | None:
    r = session.get(CycleRecipe, int(record_id))
    return None if r is None else content_sha256(recipe_content(r))


def create_recipe(session: Session, *, actor: Principal, name: str, parameters: dict[str, Any]) -> CycleRecipe:
    """A new draft version of the named recipe (version = previous + 1)."""
    try:
        params = parse_parameters(parameters)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"][1:]) or "parameters"
        raise Conflict(f"Recipe {name}: parameters.{where}: {first['msg']}", code="recipe_invalid") from e
    last = session.scalar(select(func.max(CycleRecipe.version)).where(CycleRecipe.name == name)) or 0
    stored = params.model_dump(mode="json")
    r = CycleRecipe(name=name, version=last + 1, process=params.process, parameters=stored,
                    content_sha256=content_sha256(stored), state="draft", created_by=actor.id)
    session.add(r)
    session.flush()
    record(session, actor=actor, action="recipe_created", record_type="cycle_recipe", record_id=r.id,
           new={"name": name, "version": r.version, "process": r.process, "parameters": stored})
    return r


def get_recipe(session: Session, *, recipe_id: int) -> CycleRecipe:
    """The recipe version with this id, or NotFound."""
    return get_or_not_found(session, CycleRecipe, recipe_id, f"No cycle recipe {recipe_id}", code="recipe_not_found")


def list_recipes(session: Session, *, name: str | None = None) -> list[CycleRecipe]:
    """Recipe versions, newest first within each name."""
    q = select(CycleRecipe).order_by(CycleRecipe.name, CycleRecipe.version.desc())
    if name:
        q = q.where(CycleRecipe.name == name)
    return list(session.scalars(q))


def approve_recipe(session: Session, *, actor: Principal, recipe_id: int, password: str) -> CycleRecipe:
    """Approve a draft version with the quality engineer's signature; the previous approved version is superseded."""
    r = get_recipe(session, recipe_id=recipe_id)
    if r.state != "draft":
        raise Conflict(f"Recipe {r.name} v{r.version} is {r.state}; only a draft can be approved",
                       code="recipe_state")
    sig = sign(session, signer=actor, password=password, meaning="approved", record_type="cycle_recipe",
               record_id=r.id, record_sha256=content_sha256(recipe_content(r)), allowed_roles=("quality_engineer",))
    for old in session.scalars(select(CycleRecipe).where(CycleRecipe.name == r.name, CycleRecipe.state == "approved")):
        old.state = "superseded"
        record(session, actor=actor, action="recipe_superseded", record_type="cycle_recipe", record_id=old.id,
               old={"state": "approved"}, new={"state": "superseded", "by_version": r.version})
    r.state, r.approval_signature_id, r.approved_at = "approved", sig.id, utcnow()
    record(session, actor=actor, action="recipe_approved", record_type="cycle_recipe", record_id=r.id,
           old={"state": "draft"}, new={"state": "approved", "signature_id": sig.id})
    return r


def parameters_of(r: CycleRecipe) -> RecipeParameters:
    """The validated parameters of a stored recipe version."""
    return parse_parameters(r.parameters)


# --- cycles ------------------------------------------------------------------------------------

def get_cycle(session: Session, *, cycle_id: int) -> ProcessCycle:
    """The cycle with this id, or NotFound."""
    return get_or_not_found(session, ProcessCycle, cycle_id, f"No process cycle {cycle_id}", code="cycle_not_found")


def load_of(session: Session, *, cycle_id: int) -> list[str]:
    """Device codes of a cycle's load, sorted."""
    return list(session.scalars(select(Device.device_code).join(CycleLoadItem, CycleLoadItem.device_id == Device.id)
                                .where(CycleLoadItem.cycle_id == cycle_id).order_by(Device.device_code)))


def cycles_of_device(session: Session, *, device_id: int) -> list[ProcessCycle]:
    """Every cycle whose load held the device, in time order."""
    return list(session.scalars(select(ProcessCycle).join(CycleLoadItem, CycleLoadItem.cycle_id == ProcessCycle.id)
                                .where(CycleLoadItem.device_id == device_id).order_by(ProcessCycle.started_at)))


def list_cycles(session: Session, *, machine_id: str | None = None, device_code: str | None = None,
                limit: int = 100) -> list[ProcessCycle]:
    """Cycles, newest first, by machine and/or device code."""
    q = select(ProcessCycle).order_by(ProcessCycle.started_at.desc()).limit(limit)
    if machine_id:
        q = q.where(ProcessCycle.machine_id == machine_id)
    if device_code:
        q = q.join(CycleLoadItem, CycleLoadItem.cycle_id == ProcessCycle.id).join(
            Device, Device.id == CycleLoadItem.device_id).where(Device.device_code == device_code)
    return list(session.scalars(q))


def start_cycle(session: Session, *, actor: Principal, machine_id: str, recipe_id: int, device_codes: list[str],
                started_at: datetime | None = None, cycle_ref: str | None = None) -> ProcessCycle:
    """Record the start of a cycle on a load; only with an approved recipe version and devices that exist."""
    if session.get(Machine, machine_id) is None:
        raise NotFound(f"No machine {machine_id}", code="machine_not_found")
    require_authorised(session, actor=actor, machine_id=machine_id, doing=f"start a cycle on {machine_id}")
    stopped = list(session.scalars(select(Nonconformity).where(Nonconformity.state == "open",
                                                               Nonconformity.machine_id == machine_id,
                                                               machine_wide()).order_by(Nonconformity.id)))
    if stopped:
        raise Conflict(f"Cannot start a cycle on {machine_id}: open nonconformity " + ", ".join(
            f"{nc.id} ({nc.kind.replace('_', ' ')}): {nc.description}" for nc in stopped)
            + " on the machine must be dispositioned first", code="open_nonconformity")
    recipe = get_recipe(session, recipe_id=recipe_id)
    if recipe.state != "approved":
        raise Conflict(f"Recipe {recipe.name} v{recipe.version} is {recipe.state}; a cycle needs the approved version",
                       code="recipe_not_approved")
    codes = sorted(set(device_codes))
    if not codes:
        raise Conflict("A cycle needs at least one device code in its load", code="cycle_load_empty")
    devices = list(session.scalars(select(Device).where(Device.device_code.in_(codes))))
    missing = sorted(set(codes) - {d.device_code for d in devices})
    if missing:
        raise NotFound(f"No device {', '.join(missing)}", code="device_not_found")
    scrapped = sorted(d.device_code for d in devices if d.state == "scrapped")
    if scrapped:
        raise Conflict(f"Device {', '.join(scrapped)} is scrapped and cannot be processed", code="device_scrapped")
    now = utcnow()
    started_at = started_at or now
    if started_at > now + timedelta(minutes=5):
        raise Conflict(f"The cycle start {started_at.isoformat()} is in the future", code="cycle_time")
    _check_overlap(session, machine_id, started_at)
    c = ProcessCycle(machine_id=machine_id, recipe_id=recipe.id, process=recipe.process, cycle_ref=cycle_ref,
                     state="running", started_at=started_at, operator_id=actor.id, evaluation={})
    session.add(c)
    session.flush()
    session.add_all([CycleLoadItem(cycle_id=c.id, device_id=d.id) for d in devices])
    record(session, actor=actor, action="cycle_started", record_type="process_cycle", record_id=c.id,
           new={"machine_id": machine_id, "recipe": f"{recipe.name} v{recipe.version}", "recipe_id": recipe.id,
                "device_codes": codes, "started_at": started_at.isoformat(), "cycle_ref": cycle_ref})
    return c


def cycle_content(session: Session, c: ProcessCycle) -> dict[str, Any]:
    """What the performer's signature of a completed cycle binds to (includes the verdict)."""
    recipe = session.get(CycleRecipe, c.recipe_id)
    return {"id": c.id, "machine_id": c.machine_id, "recipe_id": recipe.id, "recipe_version": recipe.version,
            "recipe_sha256": recipe.content_sha256, "device_codes": load_of(session, cycle_id=c.id),
            "cycle_ref": c.cycle_ref, "started_at": c.started_at.isoformat(),
            "ended_at": c.ended_at.isoformat() if c.ended_at else None, "operator_id": c.operator_id,
            "verdict": c.verdict, "evaluation": c.evaluation}


@register_record_hasher("process_cycle")
def _rehash_cycle(session: Session, record_id: str) -> str | None:
    c = session.get(ProcessCycle, int(record_id))
    return None if c is None else content_sha256(cycle_content(session, c))


def read_trace(influx: InfluxQL, *, measurement: str, machine_id: str, start: datetime, end: datetime) -> Trace:
    """The machine's samples of one measurement in [start, end], whatever device tags they carry.

    By machine and time, not by device code: readings the agent wrote before it learned of a cycle recorded
    late carry no device tag (or an earlier job's), and they are still what the machine did in the window.
    The agent writes one point per device of the load, so rows at one time are merged into one sample."""
    q = (f"SELECT * FROM {ident(measurement)} WHERE {ident('machine')} = {literal(machine_id)} AND "
         f"{time_range(start, end)}")
    (series,) = influx.query(q)
    if not series:
        return Trace(times=[])
    s = series[0]
    names = [n for n in s.columns if n != "time"]
    merged: dict[int, dict[str, Any]] = {}
    for row in s.values:
        sample = merged.setdefault(row[0], {})
        for name, value in zip(s.columns[1:], row[1:]):
            if value is not None and sample.get(name) is None:
                sample[name] = value
    times = sorted(merged)
    return Trace(times=times, columns={n: [merged[t].get(n) for t in times] for n in names})


def _check_overlap(session: Session, machine_id: str, started_at: datetime) -> None:
    """One machine runs one cycle at a time: refuse a start inside or before another cycle on the machine."""
    other = session.scalar(select(ProcessCycle).where(
        ProcessCycle.machine_id == machine_id,
        (ProcessCycle.ended_at.is_(None)) | (ProcessCycle.ended_at > started_at)).order_by(ProcessCycle.id))
    if other is not None:
        span = (f"running since {other.started_at.isoformat()}" if other.ended_at is None else
                f"{other.started_at.isoformat()} to {other.ended_at.isoformat()}")
        raise Conflict(f"Cycle start {started_at.isoformat()} on {machine_id} overlaps cycle {other.id} ({span}); "
                       f"one machine runs one cycle at a time", code="cycle_overlap")


def complete_cycle(session: Session, *, actor: Principal, influx: InfluxQL, cycle_id: int, password: str,
                   ended_at: datetime | None = None, residue_results: list[ResidueResult] | None = None
                   ) -> ProcessCycle:
    """Complete a cycle: evaluate its time series against its recipe version, sign, and raise NCs on failure."""
    c = get_cycle(session, cycle_id=cycle_id)
    if c.state != "running":
        raise Conflict(f"Cycle {c.id} is already {c.state}", code="cycle_state")
    if actor.id != c.operator_id:
        raise Conflict(f"Cycle {c.id} was started by another operator; only they can sign it as performed",
                       code="cycle_operator")
    require_authorised(session, actor=actor, machine_id=c.machine_id, doing=f"complete cycle {c.id} on {c.machine_id}")
    ended_at = ended_at or utcnow()
    if ended_at <= c.started_at:
        raise Conflict(f"The cycle end {ended_at.isoformat()} is not after its start {c.started_at.isoformat()}",
                       code="cycle_time")
    if ended_at - c.started_at > MAX_CYCLE:
        raise Conflict(f"Cycle {c.id} would last {ended_at - c.started_at}; the longest accepted is {MAX_CYCLE}",
                       code="cycle_time")
    _check_readings_stored(session, c, ended_at)
    recipe = session.get(CycleRecipe, c.recipe_id)
    params = parameters_of(recipe)
    codes = load_of(session, cycle_id=c.id)
    trace = read_trace(influx, measurement=params.measurement, machine_id=c.machine_id, start=c.started_at,
                       end=ended_at)
    # Losses the machine's agent reported inside the cycle (a hole in the seq, a session the broker lost, an
    # outage): missing evidence, so the cycle fails its coverage however close the readings either side are.
    lost = [(_ns(g.start), _ns(g.end), g.cause or f"data {g.outcome}")
            for g in data_gaps(influx, machine_id=c.machine_id, start=c.started_at, end=ended_at)
            if g.recovery != "full"]
    verdict: Verdict = evaluate(parameters=params, trace=trace, residues=residue_results,
                                window=(_ns(c.started_at), _ns(ended_at)), reported_gaps=lost)
    c.ended_at, c.state, c.evaluated_at = ended_at, "evaluated", utcnow()
    c.verdict = "pass" if verdict.passed else "fail"
    c.evaluation = {"recipe": {"id": recipe.id, "name": recipe.name, "version": recipe.version},
                    "series": {"measurement": params.measurement, "machine": c.machine_id, "read_by": "machine and time"},
                    "residue_results": [r.model_dump() for r in residue_results or []],
                    **verdict.model_dump(mode="json")}
    sig = sign(session, signer=actor, password=password, meaning="performed", record_type="process_cycle",
               record_id=c.id, record_sha256=content_sha256(cycle_content(session, c)))
    c.performed_signature_id = sig.id
    record(session, actor=actor, action="cycle_evaluated", record_type="process_cycle", record_id=c.id,
           old={"state": "running"}, new={"state": "evaluated", "verdict": c.verdict, "signature_id": sig.id,
                                          "failed": [f.name for f in verdict.failed]})
    if not verdict.passed:
        why = "; ".join(f"{f.name}: {f.reason}" for f in verdict.failed)
        for code in codes:
            raise_nonconformity(session, actor=SYSTEM, kind="failed_cycle", device_code=code,
                                description=f"{recipe.process.replace('_', ' ')} cycle {c.id} on {c.machine_id} "
                                            f"({recipe.name} v{recipe.version}) failed: {why}",
                                details={"cycle_id": c.id, "failed": [f.name for f in verdict.failed]})
    return c


def _check_readings_stored(session: Session, c: ProcessCycle, ended_at: datetime) -> None:
    """Refuse to judge a cycle on the readings in InfluxDB while the machine's agent says it still holds some.

    An agent reports in each heartbeat the time up to which everything it received is stored
    (`delivered_until_ns`). If, heard from after the cycle's end, it had not stored what it received before
    that end and was lagging (InfluxDB down, a backlog), the verdict would be a coverage failure with a
    nonconformity for readings that are merely late: nothing is recorded, and the operator is told to complete
    it once they are in. An agent not heard from since the end cannot say: the cycle is judged on what is
    there (a missing stretch fails it on coverage, never passes it)."""
    end = _ns(ended_at)
    rows = session.execute(select(Agent.name, Agent.last_seen_at, Agent.last_status)
                           .join(AgentMachine, AgentMachine.agent_id == Agent.id)
                           .where(AgentMachine.machine_id == c.machine_id, Agent.revoked_at.is_(None))).all()
    for name, seen, status in rows:
        until = (status or {}).get("delivered_until_ns")
        if seen is None or not isinstance(until, int):
            continue
        heard = _ns(seen)
        if heard >= end and until < end and heard - until > READINGS_LAG_NS:
            stored_to = datetime.fromtimestamp(until / 1e9, tz=timezone.utc).isoformat(timespec="seconds")
            raise Conflict(f"Cycle {c.id}: its readings are not all stored yet: agent {name} of {c.machine_id} had "
                           f"stored what it received only up to {stored_to} when last heard from "
                           f"({(heard - until) / 1e9:.0f} s behind); complete the cycle again once it has caught "
                           f"up (its status shows the backlog)", code="cycle_data_pending")


def _ns(at: datetime) -> int:
    at = at if at.tzinfo else at.replace(tzinfo=timezone.utc)  # SQLite hands back naive UTC
    return int(at.timestamp() * 1_000_000) * 1000


# --- manual steps ------------------------------------------------------------------------------

def step_content(s: ManualStep, device_code: str) -> dict[str, Any]:
    """What the performer's signature of a manual step binds to."""
    return {"id": s.id, "device_code": device_code, "kind": s.kind, "description": s.description,
            "measurements": s.measurements, "photos": s.photos, "result": s.result, "performed_by": s.performed_by}


@register_record_hasher("manual_step")
def _rehash_step(session: Session, record_id: str) -> str | None:
    s = session.get(ManualStep, int(record_id))
    return None if s is None else content_sha256(step_content(s, session.get(Device, s.device_id).device_code))


def record_manual_step(session: Session, *, actor: Principal, device_code: str, kind: str, description: str,
                       measurements: list[MeasurementIn], photos: list[PhotoIn], password: str) -> ManualStep:
    """Record a manual step with its results; the server judges each measurement against its tolerance."""
    device = session.scalar(select(Device).where(Device.device_code == device_code))
    if device is None:
        raise NotFound(f"No device {device_code}", code="device_not_found")
    if kind not in MANUAL_KINDS:
        raise Conflict(f"Manual step kind must be one of {', '.join(MANUAL_KINDS)}", code="manual_step_kind")
    judged = []
    for m in measurements:
        lo, hi = m.nominal - m.tol_minus, m.nominal + m.tol_plus
        judged.append({**m.model_dump(), "passed": lo <= m.measured <= hi})
    stored_photos = [_store_photo(session, p) for p in photos]
    s = ManualStep(device_id=device.id, kind=kind, description=description, measurements=judged,
                   photos=stored_photos, result="pass" if all(j["passed"] for j in judged) else "fail",
                   performed_by=actor.id, performed_at=utcnow())
    session.add(s)
    session.flush()
    sig = sign(session, signer=actor, password=password, meaning="performed", record_type="manual_step",
               record_id=s.id, record_sha256=content_sha256(step_content(s, device_code)))
    s.signature_id = sig.id
    record(session, actor=actor, action="manual_step_recorded", record_type="device", record_id=device_code,
           new={"step_id": s.id, "kind": kind, "result": s.result, "signature_id": sig.id})
    if s.result == "fail":
        out = [f"{j['name']} {j['measured']:g} {j['unit']} outside {j['nominal']:g} -{j['tol_minus']:g}/"
               f"+{j['tol_plus']:g}" for j in judged if not j["passed"]]
        nc = raise_nonconformity(session, actor=actor, kind=NC_KIND_OF_STEP[kind], device_code=device_code,
                                 description=f"{kind.replace('_', ' ')} of {device_code}: " + "; ".join(out),
                                 details={"manual_step_id": s.id})
        s.nonconformity_id = nc.id
    return s


def _store_photo(session: Session, photo: PhotoIn) -> dict[str, Any]:
    try:
        content = base64.b64decode(photo.content_base64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise Conflict(f"Photo {photo.file_name}: content_base64 is not valid base64", code="photo_invalid") from e
    check_photo(content, declared=None, max_bytes=settings_of(session).max_photo_bytes, what=f"Photo {photo.file_name}")
    sha = hashlib.sha256(content).hexdigest()
    folder = Path(settings_of(session).file_store) / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / sha).write_bytes(content)
    return {"file_name": photo.file_name, "caption": photo.caption, "sha256": sha, "size_bytes": len(content)}


def steps_of_device(session: Session, *, device_id: int) -> list[ManualStep]:
    """A device's manual steps in time order."""
    return list(session.scalars(select(ManualStep).where(ManualStep.device_id == device_id)
                                .order_by(ManualStep.performed_at, ManualStep.id)))


def signature_manifest(session: Session, signature_id: int | None) -> dict[str, Any] | None:
    """Printed name, role, meaning and time of a signature (what people see on screen and in print)."""
    if signature_id is None:
        return None
    s = session.get(Signature, signature_id)
    return {"id": s.id, "printed_name": s.printed_name, "role": s.signer_role, "meaning": s.meaning,
            "signed_at": s.signed_at.isoformat(), "record_type": s.record_type, "record_id": s.record_id}
