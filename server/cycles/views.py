"""Cycles and manual steps as the API shows them, read in a fixed number of queries however many are listed."""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.cycles.schemas import CycleOut, ManualStepOut, SignatureOut
from server.cycles.service import steps_of_device
from server.errors import NotFound
from server.models import CycleLoadItem, CycleRecipe, Device, ManualStep, Nonconformity, ProcessCycle, Signature


def _signatures(session: Session, ids: set[int | None]) -> dict[int, SignatureOut]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    return {s.id: SignatureOut(id=s.id, printed_name=s.printed_name, role=s.signer_role, meaning=s.meaning,
                               signed_at=s.signed_at)
            for s in session.scalars(select(Signature).where(Signature.id.in_(wanted)))}


def cycle_views(session: Session, cycles: list[ProcessCycle]) -> list[CycleOut]:
    """Each cycle with its recipe, load, verdict, signature and the nonconformities it raised: five queries."""
    if not cycles:
        return []
    ids = [c.id for c in cycles]
    recipes = {r.id: r for r in session.scalars(select(CycleRecipe).where(
        CycleRecipe.id.in_({c.recipe_id for c in cycles})))}
    loads: dict[int, list[str]] = defaultdict(list)
    loaded: dict[int, set[int]] = defaultdict(set)  # cycle -> device ids of its load
    for cycle_id, device_id, code in session.execute(
            select(CycleLoadItem.cycle_id, Device.id, Device.device_code)
            .join(Device, Device.id == CycleLoadItem.device_id).where(CycleLoadItem.cycle_id.in_(ids))
            .order_by(Device.device_code)):
        loads[cycle_id].append(code)
        loaded[cycle_id].add(device_id)
    raised: dict[int, list[int]] = defaultdict(list)
    device_ids = set().union(*loaded.values())
    if device_ids:
        # A failed cycle raises one nonconformity per device of its load, naming the cycle in its details.
        for nc in session.scalars(select(Nonconformity).where(Nonconformity.kind == "failed_cycle",
                                                              Nonconformity.device_id.in_(device_ids))):
            cycle_id = (nc.details or {}).get("cycle_id")
            if nc.device_id in loaded.get(cycle_id, ()):
                raised[cycle_id].append(nc.id)
    sigs = _signatures(session, {c.performed_signature_id for c in cycles})
    out = []
    for c in cycles:
        recipe = recipes[c.recipe_id]
        out.append(CycleOut(
            id=c.id, machine_id=c.machine_id, process=c.process, recipe_id=recipe.id, recipe_name=recipe.name,
            recipe_version=recipe.version, cycle_ref=c.cycle_ref, device_codes=loads.get(c.id, []), state=c.state,
            started_at=c.started_at, ended_at=c.ended_at, operator_id=c.operator_id, verdict=c.verdict,
            criteria=c.evaluation.get("criteria", []), samples=c.evaluation.get("samples"),
            signature=sigs.get(c.performed_signature_id), nonconformity_ids=sorted(raised.get(c.id, []))))
    return out


def cycle_view(session: Session, cycle: ProcessCycle) -> CycleOut:
    """One cycle as the API shows it."""
    return cycle_views(session, [cycle])[0]


def step_view(session: Session, s: ManualStep) -> ManualStepOut:
    """A manual step with its signature."""
    return ManualStepOut(id=s.id, device_code=session.get(Device, s.device_id).device_code, kind=s.kind,
                         description=s.description, measurements=s.measurements, photos=s.photos, result=s.result,
                         performed_by=s.performed_by, performed_at=s.performed_at,
                         signature=_signatures(session, {s.signature_id}).get(s.signature_id),
                         nonconformity_id=s.nonconformity_id)


def manual_steps_of(session: Session, *, device_code: str) -> list[ManualStepOut]:
    """A device's manual steps in time order (NotFound for an unknown device code)."""
    device = session.scalar(select(Device).where(Device.device_code == device_code))
    if device is None:
        raise NotFound(f"No device {device_code}", code="device_not_found")
    return [step_view(session, s) for s in steps_of_device(session, device_id=device.id)]
