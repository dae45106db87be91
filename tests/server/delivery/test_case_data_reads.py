"""Privacy (R11, issue 20 item 7): every read path that shows case data is audited. The walk calls every GET
endpoint of the API as every role, with a device that has gone the whole way (case, design, job, gate, stages,
release, delivery list, a nonconformity) so each endpoint has something to show; wherever an answer carries the
case's pseudonym, that call must have left a read entry in the audit trail naming the reader."""

from __future__ import annotations

import re

import pypdfium2
from sqlalchemy import func, select

from server.models import AuditEntry
from stagekit import PASSWORD, STAGES, run_stage, step_of

ROLES = ("admin", "operator", "production_manager", "quality_engineer", "design_engineer", "clinician")


def _is_stream(op: dict) -> bool:
    """Server-sent events never end: a walk cannot read them whole (they carry live state and notices)."""
    return "text/event-stream" in op.get("responses", {}).get("200", {}).get("content", {})


def _head(plant) -> int:
    with plant.app.state.sessionmaker() as s:
        return s.scalar(select(func.coalesce(func.max(AuditEntry.seq), 0)))


def _reads_since(plant, seq: int, user_id: int) -> list[str]:
    with plant.app.state.sessionmaker() as s:
        return list(s.scalars(select(AuditEntry.action).where(AuditEntry.seq > seq, AuditEntry.user_id == user_id)))


def _text(r) -> str:
    if r.headers.get("content-type", "").startswith("application/pdf"):
        return "".join(p.get_textpage().get_text_range() for p in pypdfium2.PdfDocument(r.content))
    return r.text


def test_every_answer_that_shows_case_data_is_an_audited_read(plant, app):
    ctx = plant.ready()
    decision = plant.gate(ctx)
    code = ctx["job"]["devices"][0]["device_code"]
    for stage in STAGES:
        run_stage(plant, code, stage)
    shipment = plant.call("POST", "/shipments", "production_manager", 201, json={"device_codes": [code]})
    plant.call("POST", f"/shipments/{shipment['id']}/dispatch", "production_manager", json={"password": PASSWORD})
    nc = plant.call("POST", "/nonconformities", "quality_engineer", 201, json={
        "device_code": code, "kind": "surface", "description": "label smudged on one corner"})
    sample = plant.call("POST", "/samples", "quality_engineer", 201, json={
        "device_code": code, "location": "QC cabinet", "condition": "as released"})  # kept as long as the device
    pseudonym = ctx["case"]["patient_ref"]
    values = {"sample_id": sample["id"], "case_id": ctx["case"]["id"], "design_id": ctx["design"]["id"], "iteration_id": ctx["iteration"]["id"],
              "device_code": code, "job_id": ctx["job"]["id"], "step_id": step_of(plant, code, "delivery")["id"],
              "decision_id": decision["decision_id"], "shipment_id": shipment["id"], "machine_id": ctx["machine"]["id"],
              "lot_id": ctx["lot"]["id"], "scope_id": ctx["scope"]["id"], "nc_id": nc["id"], "nonconformity_id": nc["id"],
              "user_id": plant.uid("operator"), "name": "dhr.json", "record_type": "device", "record_id": code}
    query = {"code": code, "record_type": "case", "record_id": str(ctx["case"]["id"])}
    shown, unaudited, skipped = set(), [], []
    for path, ops in sorted(app.openapi()["paths"].items()):
        if "get" not in ops or _is_stream(ops["get"]) or not path.startswith("/api/v1"):
            continue
        names = re.findall(r"{(\w+)}", path)
        if any(n not in values for n in names):
            skipped.append(path)
            continue
        url = path.replace("/api/v1", "", 1).format(**{n: values[n] for n in names})
        for role in ROLES:
            before = _head(plant)
            r = plant.client.get("/api/v1" + url, headers=plant.h(role), params=query)
            if r.status_code == 200 and pseudonym in _text(r):
                shown.add(path)
                if not any(a.endswith(("_read", "_listed")) for a in _reads_since(plant, before, plant.uid(role))):
                    unaudited.append(f"GET {path} as {role}")
    assert unaudited == [], "answers that showed the pseudonym without an audited read"
    # The walk reached the paths that do show case data, and left out only what it could not fill.
    assert {"/api/v1/cases/{case_id}", "/api/v1/history/devices/{device_code}/dhr",
            "/api/v1/history/devices/{device_code}/dhr.pdf", "/api/v1/devices/{device_code}/label",
            "/api/v1/shipments", "/api/v1/shipments/{shipment_id}", "/api/v1/shipments/{shipment_id}/delivery-list.pdf",
            "/api/v1/audit/entries"} <= shown, shown
    assert skipped == ["/api/v1/cycles/recipes/{recipe_id}", "/api/v1/cycles/{cycle_id}",
                       "/api/v1/qualification-records/{requalification_id}",
                       "/api/v1/qualification/requalifications/{requalification_id}"], skipped
