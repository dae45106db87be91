"""Retained samples through the API: a coupon kept with its location, condition and retention date; moved with a
reason; withdrawn for a destructive test only with a quality engineer's signature; never disposed of while under
retention; every step in the custody list, the audit trail and the device's DHR; the signature verifies."""

from __future__ import annotations

from datetime import date, timedelta

PASSWORD = "correct-horse-battery"


def _coupon(plant) -> tuple[dict, str, str]:
    ctx = plant.ready()
    m, lot, it = ctx["machine"], ctx["lot"], ctx["iteration"]
    job = plant.job(m["id"], lot["id"], [it["id"]], coupons=1)
    [coupon] = [d for d in job["devices"] if d["kind"] == "coupon"]
    [device] = [d for d in job["devices"] if d["kind"] == "device"]
    return job, coupon["device_code"], device["device_code"]


def test_a_coupon_is_kept_moved_and_withdrawn_only_with_a_signature(plant):
    job, coupon, device = _coupon(plant)
    until = date.today() + timedelta(days=3650)
    # An unreleased coupon has no retention date of its own: it must be given.
    r = plant.client.post("/api/v1/samples", headers=plant.h("quality_engineer"),
                          json={"device_code": coupon, "location": "QC cabinet 2", "condition": "as built"})
    assert (r.status_code, r.json()["code"]) == (409, "sample_retain_until")
    sample = plant.call("POST", "/samples", "production_manager", 201, json={
        "device_code": coupon, "location": "QC cabinet 2", "condition": "as built", "retain_until": str(until)})
    assert (sample["state"], sample["kind"], sample["retain_until"]) == ("stored", "coupon", str(until))
    moved = plant.call("POST", f"/samples/{sample['id']}/moves", "production_manager",
                       json={"to_location": "Archive room B, box 14", "reason": "cabinet 2 full"})
    assert moved["location"] == "Archive room B, box 14"

    # Withdrawn without a signature: refused, nothing changed.
    r = plant.client.post(f"/api/v1/samples/{sample['id']}/withdrawals", headers=plant.h("quality_engineer"),
                          json={"reason": "tensile test after complaint", "test_reference": "TR-2026-77"})
    assert (r.status_code, r.json()["code"]) == (409, "sample_signature")
    assert "needs a quality engineer's signature" in r.json()["detail"]
    # Nor by the production manager, signature or not.
    r = plant.client.post(f"/api/v1/samples/{sample['id']}/withdrawals", headers=plant.h("production_manager"),
                          json={"reason": "tensile test", "test_reference": "TR-1", "password": PASSWORD})
    assert r.status_code == 403
    assert plant.call("GET", f"/samples/{sample['id']}", "quality_engineer")["state"] == "stored"
    # Not disposed of while under retention.
    r = plant.client.post(f"/api/v1/samples/{sample['id']}/disposals", headers=plant.h("quality_engineer"),
                          json={"reason": "space", "password": PASSWORD})
    assert (r.status_code, r.json()["code"]) == (409, "sample_under_retention")
    assert str(until) in r.json()["detail"]

    done = plant.call("POST", f"/samples/{sample['id']}/withdrawals", "quality_engineer", json={
        "reason": "tensile test after complaint", "test_reference": "TR-2026-77", "password": PASSWORD})
    assert done["state"] == "withdrawn"
    assert [s["action"] for s in done["custody"]] == ["registered", "moved", "withdrawn"]
    withdrawal = done["custody"][-1]
    assert withdrawal["signature_id"] and withdrawal["reference"] == "TR-2026-77"
    assert withdrawal["from_location"] == "Archive room B, box 14"
    r = plant.client.post(f"/api/v1/samples/{sample['id']}/moves", headers=plant.h("production_manager"),
                          json={"to_location": "anywhere", "reason": "tidy up"})
    assert (r.status_code, r.json()["code"]) == (409, "sample_state")

    # The audit trail has every step; the signature verifies with the chain.
    actions = [e["action"] for e in plant.call("GET", "/audit/entries", "quality_engineer", params={
        "record_type": "retained_sample", "record_id": str(sample["id"])})]
    assert sorted(actions) == ["sample_moved", "sample_registered", "sample_withdrawn"]
    verified = plant.call("GET", "/audit/verify", "quality_engineer")
    assert verified["ok"] is True, verified["breaks"]

    # The DHR of the job's device lists the coupon with its state and newest step.
    dhr = plant.call("GET", f"/history/devices/{device}/dhr", "quality_engineer")
    [listed] = dhr["retained_samples"]
    assert (listed["device_code"], listed["state"], listed["location"]) == (coupon, "withdrawn",
                                                                           "Archive room B, box 14")
    assert listed["last_step"].startswith("withdrawn ") and "tensile test after complaint" in listed["last_step"]
    assert plant.call("GET", "/samples", "quality_engineer", params={"job_id": job["id"]})[0]["id"] == sample["id"]
    assert plant.call("GET", "/samples", "quality_engineer", params={"job_id": job["id"], "state": "stored"}) == []
    r = plant.client.get("/api/v1/samples", headers=plant.h("operator"))
    assert r.status_code == 403
