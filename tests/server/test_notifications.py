"""Nonconformity: stop, record, notify designers and production (R16, issue 20 item 4)."""

from __future__ import annotations


def test_a_nonconformity_notifies_production_and_the_designer_who_can_then_read_it(plant):
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    nc = plant.call("POST", "/nonconformities", "operator", 201, json={
        "kind": "dimensional", "description": "flange 0.3 mm thin", "device_code": code})
    for who in ("quality_engineer", "production_manager", "design_engineer"):
        notices = plant.call("GET", "/notifications?unread=true", who)
        mine = [n for n in notices if n["record_type"] == "nonconformity" and n["record_id"] == str(nc["id"])]
        assert [n["message"] for n in mine] == [
            f"Nonconformity {nc['id']} (dimensional) on device {code}: flange 0.3 mm thin"], who
    assert not [n for n in plant.call("GET", "/notifications", "operator") if n["record_id"] == str(nc["id"])]
    # The designer reads what they were told about; marking it read takes it off their unread list.
    assert plant.call("GET", f"/nonconformities/{nc['id']}", "design_engineer")["description"] == "flange 0.3 mm thin"
    [notice] = [n for n in plant.call("GET", "/notifications?unread=true", "design_engineer")
                if n["record_id"] == str(nc["id"])]
    r = plant.client.post(f"/api/v1/notifications/{notice['id']}/read", headers=plant.h("quality_engineer"))
    assert r.status_code == 403, "someone else's notice"
    assert plant.call("POST", f"/notifications/{notice['id']}/read", "design_engineer")["read_at"] is not None
    assert not [n for n in plant.call("GET", "/notifications?unread=true", "design_engineer")
                if n["record_id"] == str(nc["id"])]


def test_a_designer_does_not_read_nonconformities_of_other_peoples_designs(plant):
    m = plant.machine()
    nc = plant.call("POST", "/nonconformities", "quality_engineer", 201, json={
        "kind": "other", "machine_id": m["id"], "description": "chiller alarm"})
    r = plant.client.get(f"/api/v1/nonconformities/{nc['id']}", headers=plant.h("design_engineer"))
    assert r.status_code == 403 and r.json()["code"] == "nonconformity_not_yours"
    assert nc["id"] not in [n["id"] for n in plant.call("GET", "/nonconformities", "design_engineer")]
