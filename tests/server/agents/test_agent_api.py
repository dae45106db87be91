"""Agent API: token scope (an agent acts only for its machines), heartbeats, context, edge-raised nonconformities."""

from __future__ import annotations

import hashlib

from sqlalchemy import select

from server.models import Agent


def test_agent_of_machine_a_cannot_report_for_machine_b(plant):
    a = plant.machine()
    b = plant.machine()
    body = {"manufacturer": "EOS", "model": "M 290", "serial_number": b["serial_number"],
            "software_revision": "9.9", "hardware_revision": "HW-B"}
    calls = [("POST", f"/api/v1/agents/machines/{b['id']}/identity", body),
             ("GET", f"/api/v1/agents/machines/{b['id']}/context", None),
             ("POST", f"/api/v1/agents/machines/{b['id']}/build-file-checks",
              {"file_name": "x.stl", "sha256": "aa" * 32, "passed": False, "detail": "mismatch"}),
             ("POST", f"/api/v1/agents/machines/{b['id']}/excursions",
              {"signal": "chamber_o2_ppm", "value": 1500, "limit": 1000, "unit": "ppm"}),
             ("POST", "/api/v1/agents/heartbeat", {"machine_ids": [b["id"]]})]
    for method, path, json in calls:
        r = plant.client.request(method, path, headers=a["agent"], json=json)
        assert r.status_code == 403, path
        assert r.json() == {"code": "agent_scope", "detail": f"Agent agent-{a['id']} is not scoped to machine {b['id']}"}
    assert plant.call("GET", f"/machines/{b['id']}", "operator")["software_revision"] == "4.2.1"


def test_one_agent_per_machine_a_second_claim_is_refused_and_recorded_revoking_hands_it_over(plant):
    m = plant.machine()  # with its agent, agent-<id>
    r = plant.client.post("/api/v1/agents", headers=plant.h("admin"), json={"name": "cell-8", "machine_ids": [m["id"]]})
    assert (r.status_code, r.json()) == (409, {"code": "machine_owned", "detail": (
        f"machine {m['id']} belongs to agent agent-{m['id']}: one agent per machine; revoke that agent first to "
        "hand the machine over")})
    [refused] = plant.call("GET", "/audit/entries", "quality_engineer",
                           params={"record_type": "agent", "record_id": "cell-8"})
    assert refused["action"] == "agent_claim_refused"
    assert "cell-8" not in [a["name"] for a in plant.call("GET", "/agents", "admin")]
    old = next(a for a in plant.call("GET", "/agents", "admin") if a["name"] == f"agent-{m['id']}")
    plant.call("POST", f"/agents/{old['id']}/revoke", "admin", json={"reason": "cell PC retired"})
    new = plant.call("POST", "/agents", "admin", 201, json={"name": "cell-8", "machine_ids": [m["id"]]})
    assert new["machine_ids"] == [m["id"]]
    hb = plant.call("POST", "/agents/heartbeat", {"Authorization": f"Bearer {new['token']}"},
                    json={"machine_ids": [m["id"]]})
    assert hb["agent"] == "cell-8"


def test_token_stored_hashed_and_revocable(plant):
    m = plant.machine()
    old = next(a for a in plant.call("GET", "/agents", "admin") if a["name"] == f"agent-{m['id']}")
    plant.call("POST", f"/agents/{old['id']}/revoke", "admin", json={"reason": "replaced by cell-7"})
    issued = plant.call("POST", "/agents", "admin", 201, json={"name": "cell-7", "machine_ids": [m["id"]]})
    token = issued["token"]
    assert token.startswith("amtagent_") and len(token) > 40
    with plant.app.state.sessionmaker() as s:
        agent = s.scalar(select(Agent).where(Agent.name == "cell-7"))
        assert agent.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    headers = {"Authorization": f"Bearer {token}"}
    hb = plant.call("POST", "/agents/heartbeat", headers, json={"agent_version": "0.1.0", "status": {"outbox": 3}})
    assert hb["agent"] == "cell-7"
    assert plant.call("GET", f"/machines/{m['id']}", "operator")["last_heartbeat_at"] is not None
    plant.call("POST", f"/agents/{issued['id']}/revoke", "admin", json={"reason": "PC replaced"})
    r = plant.client.post("/api/v1/agents/heartbeat", headers=headers, json={})
    assert r.status_code == 401 and r.json() == {"code": "agent_token_invalid",
                                                 "detail": "Agent token is unknown or revoked"}


def test_identity_with_wrong_serial_is_refused_and_recorded(plant):
    m = plant.machine()
    r = plant.client.post(f"/api/v1/agents/machines/{m['id']}/identity", headers=m["agent"], json={
        "manufacturer": "EOS", "model": "M 290", "serial_number": "SN-OTHER", "software_revision": "4.2.1",
        "hardware_revision": "HW-B"})
    assert r.status_code == 409
    assert r.json()["detail"] == (f"Machine {m['id']} is registered as EOS M 290 serial {m['serial_number']}, "
                                  f"but the edge reports EOS M 290 serial SN-OTHER")
    entries = plant.call("GET", f"/audit/entries?record_type=machine&record_id={m['id']}", "quality_engineer")
    assert entries[-1]["action"] == "identity_mismatch"


def test_context_without_job_and_with_unapproved_design(plant):
    m = plant.machine()
    empty = plant.call("GET", f"/agents/machines/{m['id']}/context", m["agent"])
    assert empty == {"machine_id": m["id"], "job_id": None, "job_state": None, "device_codes": [], "approvals": None,
                     "started_ns": None, "open_nonconformities": [], "blocking_reasons": [], "recent_cycles": [],
                     "scopes": []}
    scope = plant.scope(m["id"])
    it = plant.iteration(plant.design(plant.case()["id"])["id"], sign=False)
    job = plant.job(m["id"], plant.lot()["id"], [it["id"]])
    ctx = plant.call("GET", f"/agents/machines/{m['id']}/context", m["agent"])
    assert ctx["job_id"] == str(job["id"]) and ctx["approvals"] == {"machine_id": m["id"], "job_id": str(job["id"]),
                                                                    "files": []}
    assert [(s["id"], s["state"]) for s in ctx["scopes"]] == [(scope["id"], "qualified")]


def test_excursion_raises_nonconformities_that_block_devices(plant):
    ctx = plant.ready(devices=2)
    m = ctx["machine"]
    codes = [d["device_code"] for d in ctx["job"]["devices"]]
    out = plant.call("POST", f"/agents/machines/{m['id']}/excursions", m["agent"], 201, json={
        "job_id": ctx["job"]["id"], "signal": "chamber_o2_ppm", "value": 1450, "limit": 1000, "unit": "ppm",
        "description": "argon supply dip at layer 812", "device_codes": [codes[0]], "requires_requalification": True})
    nc = plant.call("GET", f"/nonconformities/{out['nonconformity_ids'][0]}", "quality_engineer")
    assert (nc["source"], nc["kind"], nc["raised_by"]) == ("edge", "limit_excursion", f"agent:agent-{m['id']}")
    assert nc["description"] == "chamber_o2_ppm 1450 ppm beyond limit 1000 ppm: argon supply dip at layer 812"
    scope = plant.call("GET", f"/qualification/scopes/{ctx['scope']['id']}", "operator")
    assert scope["state"] == "requalification_required"
    d = plant.gate(ctx)
    assert [r["code"] for r in d["reasons"]] == ["machine_not_qualified", "open_nonconformity"]


def test_identity_without_the_optional_fields_is_taken_and_a_software_change_still_requalifies(plant):
    """OPC 40001-1: only manufacturer and serial number are mandatory. Before, model, software and hardware
    revision were required, so the agent of a machine without HardwareRevision never reported at all."""
    m = plant.machine(software="4.2.1")
    scope = plant.scope(m["id"])
    r = plant.client.post(f"/api/v1/agents/machines/{m['id']}/identity", headers=m["agent"], json={
        "manufacturer": "EOS", "serial_number": m["serial_number"], "software_revision": "4.3.0"})
    assert r.status_code == 200, r.text
    machine = plant.call("GET", f"/machines/{m['id']}", "quality_engineer")
    assert (machine["software_revision"], machine["hardware_revision"]) == ("4.3.0", "HW-B")  # not offered: kept
    assert plant.call("GET", f"/qualification/scopes/{scope['id']}", "quality_engineer")["state"] == \
        "requalification_required"
    r = plant.client.post(f"/api/v1/agents/machines/{m['id']}/identity", headers=m["agent"], json={
        "serial_number": m["serial_number"], "software_revision": "4.3.0"})
    assert r.status_code == 422 and "manufacturer" in r.text
