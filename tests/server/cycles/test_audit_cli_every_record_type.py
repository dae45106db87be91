"""`amtrace-server audit verify` in a fresh process (as a quality engineer runs it) on a database holding a
signature of every signed record type: clean → exit 0; a failed cycle's verdict flipped to "pass" → exit 1.

A fresh process matters: in the test process the app has imported every service already, so a record type
missing from server/registry.py only shows when the CLI runs alone (it reported 14 breaks on an untouched
database before cycles were registered)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import text

from server.audit.service import RECORD_HASHERS

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "correct-horse-battery"
STEAM = {"process": "steam", "sterilization_temp_c": 134.0, "band_minus_k": 0.0, "band_plus_k": 3.0,
         "min_hold_s": 180.0, "pressure_tolerance_kpa": 10.0, "min_f0_min": 40.0, "max_gap_s": 5.0}


def _cli(settings) -> tuple[int, str]:
    env = {**os.environ, "AMTRACE_DATABASE_URL": settings.database_url, "AMTRACE_ENVIRONMENT": settings.environment,
           "AMTRACE_AUDIT_KEY": settings.audit_key, "AMTRACE_SECRET_KEY": settings.secret_key,
           "AMTRACE_FILE_STORE": settings.file_store}
    done = subprocess.run([sys.executable, "-m", "server.cli", "audit", "verify"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def test_audit_verify_checks_every_signed_record_type_in_a_fresh_process(plant, app, monkeypatch):
    ctx = plant.ready(devices=1)  # design approval, qualification approval
    assert plant.gate(ctx)["allowed"] is True
    code = ctx["job"]["devices"][0]["device_code"]
    plant.call("POST", "/machines", "production_manager", 201, json={
        "id": "sterilizer-audit", "manufacturer": "Belimed", "model": "MST-V", "serial_number": "SN-AUD",
        "site": "Plant 1", "room": "CR-B"})
    plant.authorise("sterilizer-audit")
    recipe = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                        json={"name": "STEAM-AUDIT", "parameters": STEAM})
    plant.call("POST", f"/cycles/recipes/{recipe['id']}/approve", "quality_engineer", json={"password": PASSWORD})
    start = datetime.now(timezone.utc) - timedelta(hours=3)
    cycle = plant.call("POST", "/cycles", "operator", 201, json={
        "machine_id": "sterilizer-audit", "recipe_id": recipe["id"], "device_codes": [code],
        "started_at": start.isoformat()})
    failed = plant.call("POST", f"/cycles/{cycle['id']}/complete", "operator", json={
        "password": PASSWORD, "ended_at": (start + timedelta(minutes=20)).isoformat()})
    assert failed["verdict"] == "fail"  # no readings at all
    plant.call("POST", f"/nonconformities/{failed['nonconformity_ids'][0]}/disposition", "quality_engineer", json={
        "disposition": "rework", "rationale": "sterilize again", "password": PASSWORD})
    plant.call("POST", f"/devices/{code}/manual-steps", "operator", 201, json={
        "kind": "surface_finishing", "description": "blasted", "password": PASSWORD})
    step = plant.call("GET", f"/devices/{code}/stages", "operator")[0]
    plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")
    plant.call("POST", f"/stages/steps/{step['id']}/complete", "operator",
               json={"result": "built", "password": PASSWORD})
    plant.call("POST", f"/stages/steps/{step['id']}/accept", "production_manager",
               json={"judgement": "conforming", "password": PASSWORD})
    plant.call("POST", f"/cases/{ctx['case']['id']}/surgery-date", "clinician", json={
        "surgery_date": str((datetime.now(timezone.utc) + timedelta(days=45)).date()),
        "reason": "surgery moved by the hospital", "password": PASSWORD})
    post = plant.call("GET", f"/devices/{code}/stages", "operator")[1]
    with app.state.engine.begin() as conn:  # time passes beyond the step's deadline (test set-up)
        past = datetime.now(timezone.utc) - timedelta(hours=2)
        conn.execute(text("UPDATE stage_steps SET deadline = :d WHERE id = :i"),
                     {"d": past.replace(tzinfo=None) if conn.dialect.name == "sqlite" else past, "i": post["id"]})
    plant.call("POST", f"/stages/steps/{post['id']}/impact-assessment", "production_manager", json={
        "assessment": "two hours late, no effect on the device", "password": PASSWORD})
    # A retained coupon withdrawn for a destructive test (signed custody step).
    sample = plant.call("POST", "/samples", "quality_engineer", 201, json={
        "device_code": code, "location": "QC cabinet", "condition": "as built",
        "retain_until": str((datetime.now(timezone.utc) + timedelta(days=3650)).date())})
    plant.call("POST", f"/samples/{sample['id']}/withdrawals", "quality_engineer", json={
        "reason": "destructive test", "test_reference": "TR-AUDIT", "password": PASSWORD})
    # Another job released, then purged after its retention (the clock moved 33 years; signed by the admin).
    from server.retention import purge
    from stagekit import STAGES, run_stage

    old = plant.ready(devices=1)
    assert plant.gate(old)["allowed"] is True
    for stage in STAGES:
        run_stage(plant, old["job"]["devices"][0]["device_code"], stage)
    later = purge.utcnow() + timedelta(days=33 * 366)
    monkeypatch.setattr(purge, "utcnow", lambda: later)
    plant.call("POST", "/retention/purge", "admin", json={"record_type": "job", "record_id": str(old["job"]["id"]),
                                                          "reason": "retention ended", "password": PASSWORD})
    with app.state.sessionmaker() as s:
        signed = set(s.scalars(text("SELECT DISTINCT record_type FROM signatures")))
    assert signed == set(RECORD_HASHERS), "every signed record type has a signature in this database"

    rc, out = _cli(plant.app.state.settings)
    assert (rc, out.strip().splitlines()[-1]) == (0, "audit trail intact"), out

    with app.state.engine.begin() as conn:  # an edit by someone with database access, outside the API
        conn.execute(text("UPDATE process_cycles SET verdict = 'pass' WHERE id = :id"), {"id": cycle["id"]})
    rc, out = _cli(plant.app.state.settings)
    assert rc == 1 and "process_cycle" in out and str(cycle["id"]) in out, out
