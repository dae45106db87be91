"""Delivery and label (R17, issue 20 item 6): label data from the records, delivery lists dispatched by
production and signed for by the case's clinician (or their delegate) only, the clinician reading the record of
what they sign for, and a printable list whose UDI barcode an independent decoder reads."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pypdfium2
import pytest
import zxingcpp

from stagekit import PASSWORD, STAGES, run_stage, step_of

TODAY = date.today()


@pytest.fixture(scope="module")
def other_clinician(plant) -> str:
    """A second clinician, who is not the test cases' clinician: the seeded key 'clinician2'."""
    plant.person("clinician2", username="cora.clinician", full_name="Dr. Cora Other", role="clinician")
    return "clinician2"


def released(plant, devices: int = 1) -> tuple[dict, list[str]]:
    """A job whose devices have passed every stage up to and including release."""
    ctx = plant.ready(devices=devices)
    assert plant.gate(ctx)["allowed"]
    codes = [d["device_code"] for d in ctx["job"]["devices"]]
    for code in codes:
        for stage in STAGES:
            run_stage(plant, code, stage)
    return ctx, codes


def test_the_label_says_use_site_imaging_date_and_design_completion_from_the_records(plant):
    ctx, [code] = released(plant)
    label = plant.call("GET", f"/devices/{code}/label", "production_manager")
    assert label["intended_use"] == "total hip arthroplasty, cementless acetabular component"
    assert label["anatomical_site"] == "left acetabulum"
    assert label["imaging_date"] == str(TODAY - timedelta(days=7))
    assert label["design_completed_on"] == str(TODAY), "the day the iteration's last approval was signed"
    assert label["udi_hri"].startswith("(01)09506000134352") and label["missing"] == []
    assert label["patient_ref"] == ctx["case"]["patient_ref"] and "exclusive use" in label["statement"]
    entries = plant.call("GET", f"/audit/entries?record_type=device&record_id={code}", "quality_engineer")
    assert "label_read" in [e["action"] for e in entries], "the label shows the pseudonym: its read is audited"


def test_a_device_without_its_imaging_date_cannot_be_shipped_until_it_is_recorded(plant):
    case = plant.call("POST", "/cases", "clinician", 201, json={
        "institution": "University Hospital", "surgery_date": str(TODAY + timedelta(days=30))})
    assert case["clinician_username"] == "clinician" and case["imaging_date"] is None
    ctx, [code] = released(plant)
    with plant.app.state.engine.begin() as conn:  # the device of another case, imaged date unknown
        from sqlalchemy import text
        conn.execute(text("UPDATE cases SET imaging_date = NULL WHERE id = :id"), {"id": ctx["case"]["id"]})
    assert plant.call("GET", f"/devices/{code}/label", "production_manager")["missing"] == ["imaging date"]
    r = plant.client.post("/api/v1/shipments", headers=plant.h("production_manager"), json={"device_codes": [code]})
    assert r.status_code == 409 and r.json()["detail"] == (f"Cannot make the delivery list: {code} has no imaging "
                                                           f"date for its label")
    plant.call("POST", f"/cases/{ctx['case']['id']}/imaging-date", "clinician",
               json={"imaging_date": str(TODAY - timedelta(days=3))})
    plant.call("POST", "/shipments", "production_manager", 201, json={"device_codes": [code]})


def test_only_the_cases_clinician_signs_for_the_delivery_list_and_reads_what_they_sign_for(plant, other_clinician):
    ctx, codes = released(plant, devices=2)
    delivery = step_of(plant, codes[0], "delivery")
    r = plant.client.post(f"/api/v1/stages/steps/{delivery['id']}/start", headers=plant.h("production_manager"))
    assert r.status_code == 409 and r.json() == {"code": "delivery_needs_list", "detail": (
        f"Cannot start delivery of device {codes[0]} on its own: put it on a delivery list (POST /shipments)")}

    shipment = plant.call("POST", "/shipments", "production_manager", 201, json={
        "device_codes": codes, "note": "courier, sterile barrier checked"})
    assert shipment["state"] == "open" and shipment["clinician_username"] == "clinician"
    r = plant.client.post(f"/api/v1/shipments/{shipment['id']}/acceptance", headers=plant.h("clinician"),
                          json={"judgement": "received", "password": PASSWORD})
    assert r.status_code == 409 and r.json()["code"] == "shipment_state", "nothing is signed for before it left"
    r = plant.client.post(f"/api/v1/shipments/{shipment['id']}/dispatch", headers=plant.h("production_manager"),
                          json={"password": "wrong"})
    assert r.status_code == 409 and r.json()["code"] == "signature_password"
    assert plant.call("GET", f"/shipments/{shipment['id']}", "production_manager")["state"] == "open"
    shipment = plant.call("POST", f"/shipments/{shipment['id']}/dispatch", "production_manager",
                          json={"password": PASSWORD})
    assert shipment["state"] == "dispatched" and len(shipment["list_sha256"]) == 64
    assert all(i["dispatched"]["meaning"] == "performed" and i["delivery_state"] == "completed"
               for i in shipment["items"])
    notes = plant.call("GET", "/notifications", "clinician")
    assert any(n["kind"] == "shipment_dispatched" and n["record_id"] == str(shipment["id"]) for n in notes)

    # Another clinician: cannot read the list, the label or the record, and cannot sign for the devices.
    other = plant.h(other_clinician)
    assert plant.client.get(f"/api/v1/shipments/{shipment['id']}", headers=other).status_code == 403
    assert plant.client.get(f"/api/v1/devices/{codes[0]}/label", headers=other).status_code == 403
    assert plant.client.get(f"/api/v1/history/devices/{codes[0]}/dhr?plots=false", headers=other).status_code == 403
    r = plant.client.post(f"/api/v1/shipments/{shipment['id']}/acceptance", headers=other,
                          json={"judgement": "received", "password": PASSWORD})
    assert r.status_code == 403 and r.json()["code"] == "not_case_clinician"
    assert "Dr. Clara Clinician (clinician)" in r.json()["detail"]
    r = plant.client.post(f"/api/v1/stages/steps/{delivery['id']}/accept", headers=other,
                          json={"judgement": "received", "password": PASSWORD})
    assert r.status_code == 403, "the stage endpoint is the same door with the same rule"
    assert plant.call("GET", "/shipments", other) == []

    # The case's clinician reads the record of what they sign for, then signs for the list.
    dhr = plant.call("GET", f"/history/devices/{codes[0]}/dhr?plots=false", "clinician")
    assert dhr["device"]["device_code"] == codes[0] and dhr["case"]["patient_ref"] == ctx["case"]["patient_ref"]
    assert plant.client.get(f"/api/v1/history/devices/{codes[0]}/dhr.pdf",
                            headers=plant.h("clinician")).status_code == 200
    assert [s["id"] for s in plant.call("GET", "/shipments?state=dispatched", "clinician")] == [shipment["id"]]
    shipment = plant.call("POST", f"/shipments/{shipment['id']}/acceptance", "clinician",
                          json={"judgement": "received intact, labels checked", "password": PASSWORD})
    assert shipment["state"] == "accepted"
    assert all(i["accepted"]["printed_name"] == "Dr. Clara Clinician" for i in shipment["items"])
    for code in codes:
        assert plant.call("GET", f"/devices/{code}", "production_manager")["state"] == "delivered"
    sigs = plant.call("GET", f"/audit/signatures?record_type=stage_acceptance&record_id={delivery['id']}",
                      "quality_engineer")
    assert len(sigs) == 1 and sigs[0]["meaning"] == "reviewed"
    assert plant.call("GET", "/audit/verify", "quality_engineer")["ok"] is True, \
        "each acceptance binds the list's hash, and the chain re-hashes it"
    actions = [e["action"] for e in plant.call("GET", f"/audit/entries?record_type=shipment&record_id={shipment['id']}",
                                               "quality_engineer")]
    assert {"shipment_created", "shipment_dispatched", "shipment_read", "shipment_accepted"} <= set(actions)


def test_a_named_delegate_signs_for_the_clinician_and_the_list_hash_catches_an_edited_label(plant, other_clinician):
    ctx, [code] = released(plant)
    r = plant.client.post(f"/api/v1/cases/{ctx['case']['id']}/delegate", headers=plant.h(other_clinician),
                          json={"delegate_username": "cora.clinician"})
    assert r.status_code == 403, "only the case's clinician names a delegate"
    case = plant.call("POST", f"/cases/{ctx['case']['id']}/delegate", "clinician",
                      json={"delegate_username": "cora.clinician"})
    assert case["delegate_username"] == "cora.clinician"
    shipment = plant.call("POST", "/shipments", "production_manager", 201, json={"device_codes": [code]})
    plant.call("POST", f"/shipments/{shipment['id']}/dispatch", "production_manager", json={"password": PASSWORD})
    assert [s["id"] for s in plant.call("GET", "/shipments?state=dispatched", other_clinician)] == [shipment["id"]]
    done = plant.call("POST", f"/shipments/{shipment['id']}/acceptance", other_clinician,
                      json={"judgement": "received for Dr. Clinician", "password": PASSWORD})
    assert done["state"] == "accepted" and done["items"][0]["accepted"]["printed_name"] == "Dr. Cora Other"
    assert plant.call("GET", "/audit/verify", "quality_engineer")["ok"] is True

    with plant.app.state.engine.begin() as conn:  # someone edits the shipped list's hash in the database
        from sqlalchemy import text
        conn.execute(text("UPDATE shipments SET list_sha256 = :h WHERE id = :id"),
                     {"h": "0" * 64, "id": shipment["id"]})
    report = plant.call("GET", "/audit/verify", "quality_engineer")
    assert report["ok"] is False and any("stage_acceptance" in b["problem"] or b["signature_id"] for b in
                                         report["breaks"]), report
    with plant.app.state.engine.begin() as conn:
        conn.execute(text("UPDATE shipments SET list_sha256 = :h WHERE id = :id"),
                     {"h": done["list_sha256"], "id": shipment["id"]})


def test_a_list_is_for_released_devices_of_one_clinician(plant, other_clinician):
    ctx = plant.ready()
    plant.gate(ctx)
    code = ctx["job"]["devices"][0]["device_code"]
    r = plant.client.post("/api/v1/shipments", headers=plant.h("production_manager"), json={"device_codes": [code]})
    assert r.status_code == 409 and r.json()["detail"] == (
        f"Cannot make the delivery list: {code} is not ready to ship (device in production, release pending, "
        f"delivery pending)")
    _, [mine] = released(plant)
    case = plant.call("POST", "/cases", "design_engineer", 201, json={
        "clinician_username": "cora.clinician", "institution": "University Hospital",
        "surgery_date": str(TODAY + timedelta(days=30)), "imaging_date": str(TODAY)})
    assert case["clinician"] == "Dr. Cora Other"
    design = plant.call("POST", f"/cases/{case['id']}/designs", "design_engineer", 201, json={
        "name": f"Cup {uuid.uuid4().hex[:4]}", "process": "LPBF", "material": "Ti-6Al-4V ELI",
        "product_family": "acetabular cup", "regulatory_category": "custom_made", "gtin": "09506000134352",
        "intended_use": "revision hip arthroplasty, acetabular defect", "anatomical_site": "right acetabulum"})
    it = plant.iteration(design["id"], sign=False)
    plant.call("POST", f"/designs/iterations/{it['id']}/signatures", "design_engineer", 201,
               json={"password": PASSWORD})
    r = plant.client.post(f"/api/v1/designs/iterations/{it['id']}/signatures", headers=plant.h("clinician"),
                          json={"password": PASSWORD})
    assert r.status_code == 403 and r.json()["code"] == "not_case_clinician", \
        "a clinician approves only the designs of their own cases"
    plant.call("POST", f"/designs/iterations/{it['id']}/signatures", other_clinician, 201,
               json={"password": PASSWORD})
    job = plant.job(ctx["machine"]["id"], plant.lot()["id"], [it["id"]])
    plant.gate({**ctx, "job": job, "sha": it["files"][0]["sha256"]})
    theirs = job["devices"][0]["device_code"]
    for stage in STAGES:
        run_stage(plant, theirs, stage)
    r = plant.client.post("/api/v1/shipments", headers=plant.h("production_manager"),
                          json={"device_codes": [mine, theirs]})
    assert r.status_code == 409 and r.json()["code"] == "shipment_mixed"
    assert "Dr. Clara Clinician at University Hospital" in r.json()["detail"]
    assert plant.call("GET", f"/devices/{theirs}/label", other_clinician)["statement"].startswith("Custom-made")
    first = plant.call("POST", "/shipments", "production_manager", 201, json={"device_codes": [mine]})
    r = plant.client.post("/api/v1/shipments", headers=plant.h("production_manager"), json={"device_codes": [mine]})
    assert r.status_code == 409 and r.json()["detail"].endswith(f"{mine} is already on delivery list {first['id']}")


def test_the_printed_list_carries_each_udi_as_a_gs1_barcode_an_independent_decoder_reads(plant):
    _, codes = released(plant, devices=2)
    shipment = plant.call("POST", "/shipments", "production_manager", 201, json={"device_codes": codes})
    plant.call("POST", f"/shipments/{shipment['id']}/dispatch", "production_manager", json={"password": PASSWORD})
    r = plant.client.get(f"/api/v1/shipments/{shipment['id']}/delivery-list.pdf", headers=plant.h("clinician"))
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    pdf = pypdfium2.PdfDocument(r.content)
    text = "".join(page.get_textpage().get_text_range() for page in pdf)
    decoded = [b for page in pdf for b in zxingcpp.read_barcodes(page.render(scale=3).to_pil())]
    labels = [plant.call("GET", f"/devices/{c}/label", "production_manager") for c in codes]
    # zxing-cpp reads GS1 symbols and prints them with their AIs in brackets: the HRI the label shows.
    assert sorted((b.format.name, b.content_type.name, b.text) for b in decoded) == sorted(
        ("Code128", "GS1", label["udi_hri"]) for label in labels)
    for label in labels:
        assert label["device_code"] in text and label["intended_use"] in text and label["anatomical_site"] in text
    assert "signature: ____" in text, "not yet accepted: a line to sign on"
