"""Assemble the device history record (DHR) of one device from the SQL records and InfluxDB."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from server.cycles.service import cycles_of_device, load_of, steps_of_device
from server.history import service, summaries
from server.timeseries.gaps import data_gaps
from server.history.cycle_plots import cycle_plot
from server.timeseries.influx import InfluxQL, TimeSeriesUnavailable
from server.history.schemas import (BuildSummary, DeviceHistoryRecord, DhrBuildFileCheck, DhrCase, DhrCycle,
                                    DhrArchive, DhrLocalOverride, DhrRetainedSample, DhrRetention, DhrUnrecordedData,
                                    DhrDesign, DhrDesignFile, DhrDevice, DhrGateDecision, DhrMachine, DhrManualStep,
                                    DhrMaterialLot, DhrNonconformity, DhrProcessMonitoring, DhrSeal, DhrStage,
                                    SignatureManifest)
from server.models import (BuildFileCheck, Case, CycleRecipe, Design, DesignIteration, Device, DeviceSeal,
                           GateDecision, Job, Machine, MaterialLot, Nonconformity, Signature, StageStep,
                           utcnow)
from server.nonconformities.service import affecting_device, blocking, scope_of
from server.security import Principal

def manifest(session: Session, sig_id: int | None) -> SignatureManifest | None:
    """The printed manifestation of a signature."""
    if sig_id is None:
        return None
    s = session.get(Signature, sig_id)
    return SignatureManifest(id=s.id, printed_name=s.printed_name, role=s.signer_role, meaning=s.meaning,
                             signed_at=s.signed_at, record_type=s.record_type, record_id=s.record_id)


def _stage(session: Session, s: StageStep) -> DhrStage:
    return DhrStage(stage=s.stage, state=s.state, deadline=s.deadline, started_at=s.started_at,
                    completed_at=s.completed_at, result=s.result, performed=manifest(session, s.completion_signature_id),
                    accepted_at=s.accepted_at, judgement=s.judgement,
                    accepted=manifest(session, s.acceptance_signature_id), impact_assessment=s.impact_assessment)


def device_history_record(session: Session, influx: InfluxQL, *, actor: Principal, device_code: str,
                          plots: bool = True, monitoring: bool = True) -> DeviceHistoryRecord:
    """The complete DHR of one device (monitoring=False: process monitoring left empty, for the seal)."""
    device = service.device_by_code(session, device_code)
    job = session.get(Job, device.job_id)
    machine = session.get(Machine, job.machine_id)
    lot = session.get(MaterialLot, job.material_lot_id)
    open_ncs = blocking(session, device=device)
    released = session.scalar(select(StageStep).where(StageStep.device_id == device.id, StageStep.stage == "release",
                                                      StageStep.state == "accepted")) is not None
    case = session.get(Case, device.case_id) if device.case_id else None
    design = None
    if device.design_iteration_id:
        it = session.get(DesignIteration, device.design_iteration_id)
        d = session.get(Design, it.design_id)
        approvals = session.scalars(select(Signature).where(Signature.record_type == "design_iteration",
                                                            Signature.record_id == str(it.id)).order_by(Signature.id))
        design = DhrDesign(design_id=d.id, name=d.name, process=d.process, material=d.material,
                           product_family=d.product_family, iteration_id=it.id, iteration=it.number,
                           status=it.status, software=f"{it.software_name} {it.software_version}",
                           content_sha256=it.content_sha256,
                           files=[DhrDesignFile(file_name=f.file_name, sha256=f.sha256, size_bytes=f.size_bytes)
                                  for f in it.files],
                           approvals=[manifest(session, s.id) for s in approvals])
    gates = list(session.scalars(select(GateDecision).where(GateDecision.job_id == job.id).order_by(GateDecision.id)))
    allowed = next((g for g in gates if g.allowed), None)
    snap = (allowed or (gates[-1] if gates else None))
    inputs = snap.inputs if snap else {}
    m_in = inputs.get("machine") or {}
    dhr_machine = DhrMachine(machine_id=machine.id, manufacturer=machine.manufacturer, model=machine.model,
                             serial_number=machine.serial_number, site=machine.site, room=machine.room,
                             software_at_build=m_in.get("software"), firmware_at_build=m_in.get("firmware"),
                             build_prep_software_at_build=m_in.get("build_prep_software"),
                             qualification_at_build=inputs.get("scope"))
    checks = session.scalars(select(BuildFileCheck).where(BuildFileCheck.job_id == job.id).order_by(BuildFileCheck.id))
    w = service.build_window(session, device=device)
    if monitoring:
        mon = summaries.summary_of(session, influx, device_code=device_code, plots=plots)
    else:  # the sealed records sections exclude process monitoring: do not read it
        mon = summaries.Monitoring(BuildSummary(device_code=device_code, machine_id=w.machine_id, job_id=w.job_id,
                                                start=w.start, end=w.end, signals=[], events=[]))
    summary = mon.build
    cycles = []
    for c in cycles_of_device(session, device_id=device.id):
        recipe = session.get(CycleRecipe, c.recipe_id)
        plot = []
        if plots and c.ended_at:
            stored = mon.cycle_plots.get(c.id) if mon.cycle_plots is not None else None
            plot = stored if stored is not None else cycle_plot(session, influx, cycle=c, device_code=device_code)
        gaps = []
        if monitoring and c.ended_at:
            gaps = (mon.cycle_gaps or {}).get(c.id)  # stored at release, else read now
            if gaps is None:
                gaps = data_gaps(influx, machine_id=c.machine_id, start=c.started_at, end=c.ended_at)
        cycles.append(DhrCycle(cycle_id=c.id, process=c.process, machine_id=c.machine_id, recipe=recipe.name,
                               recipe_version=recipe.version, cycle_ref=c.cycle_ref,
                               load=load_of(session, cycle_id=c.id), started_at=c.started_at, ended_at=c.ended_at,
                               verdict=c.verdict, criteria=c.evaluation.get("criteria", []),
                               performed_by=manifest(session, c.performed_signature_id), plot=plot,
                               data_gaps=gaps))
    unrecorded, unrecorded_check = [], None
    archive_section, archived = (None, None)
    if monitoring:
        archive_section, archived = _archive_section(session, device=device)
        try:
            unrecorded = service.unrecorded_process_data(
                influx, device_code=device_code, build_machine=w.machine_id,
                recorded=[(c.machine_id, c.started_at, c.ended_at)
                          for c in cycles_of_device(session, device_id=device.id)])
            unrecorded_check = "checked against InfluxDB for this document"
        except TimeSeriesUnavailable as e:
            # A released record reads without InfluxDB; it then says it could not look, rather than "none".
            unrecorded_check = f"not checked: {e.detail}"
    if archived is not None:
        # Released and archived: what the check found over the sealed points when the archive was written counts
        # too (InfluxDB may have expired them since); data that arrived later is found live above.
        seen = {(u.machine_id, u.measurement, u.start) for u in unrecorded}
        unrecorded += [x for x in (DhrUnrecordedData.model_validate(u) for u in archived.get("unrecorded_process_data",
                                                                                          []))
                       if (x.machine_id, x.measurement, x.start) not in seen]
        unrecorded.sort(key=lambda u: (u.start, u.machine_id))
        unrecorded_check = (f"{unrecorded_check}; and {archived.get('unrecorded_check')} when the archive was written "
                            f"({archived.get('generated_at')}), read from the archive")
    steps = [DhrManualStep(step_id=s.id, kind=s.kind, description=s.description, measurements=s.measurements,
                           photos=s.photos, result=s.result, performed_at=s.performed_at,
                           signature=manifest(session, s.signature_id))
             for s in steps_of_device(session, device_id=device.id)]
    stages = [_stage(session, s) for s in session.scalars(select(StageStep).where(StageStep.device_id == device.id)
                                                           .order_by(StageStep.position))]
    ncs = list(session.scalars(select(Nonconformity).where(or_(
        Nonconformity.device_id == device.id,
        and_(Nonconformity.job_id == device.job_id, Nonconformity.device_id.is_(None)))).order_by(Nonconformity.id)))
    own = {n.id for n in ncs}
    related = [n for n in affecting_device(session, device=device, open_only=False) if n.id not in own]
    seal = session.scalar(select(DeviceSeal).where(DeviceSeal.device_id == device.id))
    return DeviceHistoryRecord(
        generated_at=utcnow(), generated_by=actor.actor,
        device=DhrDevice(device_code=device.device_code, kind=device.kind,
                         regulatory_category=device.regulatory_category, udi_hri=device.udi_hri,
                         udi_element_string=device.udi_element_string, position=device.position, state=device.state,
                         status=service.device_status(device.state, bool(open_ncs), released)),
        case=None if case is None else DhrCase(case_id=case.id, patient_ref=case.patient_ref,
                                               institution=case.institution, clinician=case.clinician,
                                               surgery_date=case.surgery_date),
        design=design,
        material_lot=DhrMaterialLot(lot_number=lot.lot_number, material=lot.material, supplier=lot.supplier,
                                    certificate_ref=lot.certificate_ref, lot_type=lot.lot_type,
                                    reuse_count=lot.reuse_count),
        machine=dhr_machine, job_id=job.id, build_parameters=job.build_parameters,
        build_file_checks=[DhrBuildFileCheck(file_name=c.file_name, sha256=c.sha256, passed=c.passed, detail=c.detail,
                                             checked_at=c.checked_at) for c in checks],
        release_gate=[DhrGateDecision(decision_id=g.id, allowed=g.allowed, reasons=g.reasons, decided_at=g.decided_at,
                                      requested_by=g.requested_by) for g in gates],
        process_monitoring=DhrProcessMonitoring(start=w.start, end=w.end, signals=summary.signals,
                                                events=summary.events, plots=summary.plots,
                                                data_gaps=summary.data_gaps, source=summary.source,
                                                computed_at=summary.computed_at,
                                                summary_sha256=summary.summary_sha256, note=summary.note),
        cycles=cycles, unrecorded_process_data=unrecorded, unrecorded_check=unrecorded_check, manual_steps=steps,
        stages=stages,
        nonconformities=[_nc(session, n) for n in ncs],
        local_overrides=[_override(n) for n in ncs if n.kind == "local_override"],
        related_nonconformities=[_nc(session, n) for n in related],
        delivery=next((s for s in stages if s.stage == "delivery"), None),
        retention=_retention(session, device),
        retained_samples=_samples(session, device),
        archive=archive_section,
        seal=None if seal is None else DhrSeal(sealed_at=seal.sealed_at, range_start=seal.range_start,
                                               range_end=seal.range_end, point_count=seal.point_count,
                                               series_sha256=seal.series_sha256, records_sha256=seal.records_sha256,
                                               audit_seq=seal.audit_seq))


def _archive_section(session: Session, *, device: Device):
    """The DHR's archive section and the archived DHR (as JSON), when there is one (manifest and dhr.json checked)."""
    from server.archive.reading import check, row_of

    if session.scalar(select(DeviceSeal.id).where(DeviceSeal.device_id == device.id)) is None:
        return None, None
    c = check(session, device=device, only={"dhr.json"})
    export = f"amtrace-server dhr export {device.device_code} (line protocol, from the archive)"
    if not c.present:
        return DhrArchive(state="missing", full_resolution=f"from InfluxDB while it keeps the points; the archive is "
                                                            f"written by amtrace-server dhr archive "
                                                            f"{device.device_code}"), None
    row = row_of(session, device.id)
    section = DhrArchive(state="damaged" if c.problems else "written", archive_id=row.archive_id,
                         written_at=row.written_at, manifest_sha256=row.manifest_sha256, files=row.files,
                         size_bytes=row.size_bytes, location=c.location, problems=c.problems,
                         full_resolution=export)
    archived = json.loads(c.read["dhr.json"]) if "dhr.json" in c.read else None
    return section, archived


def _samples(session: Session, device: Device) -> list[DhrRetainedSample]:
    from server.samples.service import describe, list_samples

    out = []
    for sample in list_samples(session, job_id=device.job_id):
        d = describe(session, sample)
        last = d["custody"][-1]
        out.append(DhrRetainedSample(sample_id=d["id"], device_code=d["device_code"], kind=d["kind"],
                                     location=d["location"], condition=d["condition"], retain_until=d["retain_until"],
                                     state=d["state"], last_step=f"{last['action']} {last['at']:%Y-%m-%d %H:%M} UTC: "
                                                                 f"{last['reason']}"))
    return out


def _retention(session: Session, device: Device) -> DhrRetention | None:
    from server.retention.service import BASIS, of_device

    kept = of_device(session, device.id)
    if kept is None:
        return None
    return DhrRetention(retain_until=kept.retain_until, product_family=kept.product_family,
                        lifetime_years=kept.lifetime_years, extra_years=kept.extra_years, rule=kept.rule, basis=BASIS)


def _override(n: Nonconformity) -> DhrLocalOverride:
    d = n.details
    at = lambda ns: None if ns is None else datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)  # noqa: E731
    return DhrLocalOverride(nonconformity_id=n.id, machine_id=n.machine_id, job=str(d.get("job", "")),
                            start=at(d.get("start_ns")), end=at(d.get("end_ns")), reason=str(d.get("reason", "")),
                            state=n.state)


def _nc(session: Session, n: Nonconformity) -> DhrNonconformity:
    return DhrNonconformity(nonconformity_id=n.id, kind=n.kind, description=n.description, raised_by=n.raised_by,
                            raised_at=n.raised_at, state=n.state, disposition=n.disposition,
                            rationale=n.disposition_rationale, signature=manifest(session, n.disposition_signature_id),
                            scope=scope_of(n))
