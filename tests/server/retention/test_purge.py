"""Retention carried to linked records, deletes refused under retention (API and CLI), and the signed purge of a
job after retention: the records and the archive go, a signed tombstone stays, `audit verify` still passes."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from server.models import AuditEntry, Device, Job, Signature
from server.retention import purge as purge_module
from stagekit import PASSWORD, STAGES, run_server_cli, run_stage, step_of

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def released(plant, app):
    """A job of two devices, both released (sealed, archived, given their retention date)."""
    ctx = plant.ready(devices=2)
    codes = [d["device_code"] for d in ctx["job"]["devices"]]
    assert plant.gate(ctx)["allowed"] is True
    for code in codes:
        for stage in STAGES:
            run_stage(plant, code, stage)
    release = step_of(plant, codes[0], "release")
    return {"ctx": ctx, "codes": codes, "job_id": ctx["job"]["id"], "release": release}


def test_linked_records_carry_the_devices_date(plant, released):
    code = released["codes"][0]
    device = plant.call("GET", f"/retention/records/device/{code}", "quality_engineer")
    until = date.fromisoformat(device["retain_until"])
    assert until == date.today().replace(year=date.today().year + 32) or until.year == date.today().year + 32
    job = plant.call("GET", f"/retention/records/job/{released['job_id']}", "quality_engineer")
    assert job["retain_until"] == device["retain_until"] and sorted(job["devices"]) == sorted(released["codes"])
    sig = plant.call("GET", f"/retention/records/signature/{released['release']['acceptance_signature_id']}",
                     "production_manager")
    assert sig["retain_until"] == device["retain_until"] and f"device {code}" in sig["because"]
    ctx = released["ctx"]
    for rtype, rid in (("design_iteration", ctx["iteration"]["id"]), ("material_lot", ctx["lot"]["id"])):
        shared = plant.call("GET", f"/retention/records/{rtype}/{rid}", "quality_engineer")
        assert shared["retain_until"] == device["retain_until"], shared
    assert plant.client.get(f"/api/v1/retention/records/job/{released['job_id']}",
                            headers=plant.h("operator")).status_code == 403


def test_deletes_under_retention_are_refused_naming_record_and_date(plant, app, released, monkeypatch, capsys):
    code, job_id = released["codes"][0], released["job_id"]
    until = plant.call("GET", f"/retention/records/device/{code}", "admin")["retain_until"]
    sig_id = released["release"]["acceptance_signature_id"]
    # A complaint after release: a nonconformity of a released device is kept as long as the device's records.
    nc = plant.call("POST", "/nonconformities", "quality_engineer", 201, json={
        "kind": "dimensional", "description": "complaint: flange 0.3 mm thin", "device_code": code})
    for rtype, rid in (("device", code), ("job", str(job_id)), ("signature", str(sig_id)),
                       ("nonconformity", str(nc["id"]))):
        r = plant.client.delete(f"/api/v1/retention/records/{rtype}/{rid}", headers=plant.h("admin"))
        assert r.status_code == 409 and r.json()["code"] == "under_retention", r.text
        assert f"{rtype} {rid} is under retention until {until}" in r.json()["detail"]
    r = plant.client.post("/api/v1/retention/purge", headers=plant.h("admin"), json={
        "record_type": "job", "record_id": str(job_id), "reason": "tidy up", "password": PASSWORD})
    assert r.status_code == 409 and f"until {until}" in r.json()["detail"]
    assert plant.client.delete(f"/api/v1/retention/records/device/{code}",
                               headers=plant.h("quality_engineer")).status_code == 403
    rc, out = run_server_cli(plant, monkeypatch, capsys, "retention", "purge", "device", code, "--user", "admin",
                   "--reason", "tidy up")
    assert rc == 1 and f"device {code} is under retention until {until}" in out
    with app.state.sessionmaker() as s:  # nothing went
        assert s.scalar(select(func.count()).select_from(Device).where(Device.job_id == job_id)) == 2


def test_signed_purge_after_retention_keeps_a_tombstone_and_the_chain_verifying(plant, app, released, monkeypatch,
                                                                               capsys):
    codes, job_id = released["codes"], released["job_id"]
    archives = Path(app.state.settings.file_store) / "archives"
    assert all((archives / c).is_dir() for c in codes)
    assert run_server_cli(plant, monkeypatch, capsys, "audit", "verify")[0] == 0
    # Thirty-three years on (the clock of the retention rules; nothing else can be made to pass that long).
    later = purge_module.utcnow() + timedelta(days=33 * 366)
    monkeypatch.setattr(purge_module, "utcnow", lambda: later)
    r = plant.client.delete(f"/api/v1/retention/records/device/{codes[0]}", headers=plant.h("admin"))
    assert r.status_code == 409 and r.json()["code"] == "purge_needs_signature"
    r = plant.client.post("/api/v1/retention/purge", headers=plant.h("admin"), json={
        "record_type": "job", "record_id": str(job_id), "reason": "tidy up", "password": "wrong"})
    assert r.status_code in (401, 403, 409) and "signature" in r.text.lower()
    tomb = plant.call("POST", "/retention/purge", "admin", json={
        "record_type": "device", "record_id": codes[1], "reason": "retention ended (32 years after release)",
        "password": PASSWORD})
    assert tomb["job_id"] == job_id and sorted(d["device_code"] for d in tomb["devices"]) == sorted(codes)
    # Seven stage steps per device (the six to release, and delivery).
    assert tomb["rows"]["nonconformities"] == 1  # the complaint raised after release went with its device
    assert tomb["rows"]["devices"] == 2 and tomb["rows"]["stage_steps"] == 14 and tomb["rows"]["signatures"] >= 24
    with app.state.sessionmaker() as s:
        assert s.scalar(select(func.count()).select_from(Device).where(Device.job_id == job_id)) == 0
        assert s.get(Job, job_id) is None
        entry = s.scalar(select(AuditEntry).where(AuditEntry.action == "records_purged"))
        assert entry.record_id == f"job-{job_id}:{min(codes)}" and s.get(Signature, tomb["signature_id"]).meaning == "approved"
    assert not any((archives / c).exists() and any((archives / c).iterdir()) for c in codes)
    plant.call("GET", f"/history/devices/{codes[0]}/dhr", "quality_engineer", 404)
    rc, out = run_server_cli(plant, monkeypatch, capsys, "audit", "verify")
    assert rc == 0, out
