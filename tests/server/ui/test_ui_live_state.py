"""Live machine state through the real agent API: what is refused and why, the snapshot, the server-sent-event
stream, and the badge + PIN login the kiosk uses."""

from __future__ import annotations

import json
import time

import httpx
import jwt

from uikit import sse_events

NS = 1767225600000000000


def live(**kw):
    return {"connected": True, "state": "idle", "job": None, "layer": None, "layers_total": None,
            "software_revision": "4.2.1", "alerts": [], "updated_ns": NS, **kw}


def test_heartbeat_refuses_bad_entries_with_where_and_why_and_keeps_the_good_ones(plant):
    a, b = plant.machine(), plant.machine()
    out = plant.call("POST", "/agents/heartbeat", a["agent"], json={"status": {"outbox_depth": 3, "machines": {
        a["id"]: live(state="building", layer=50, layers_total=200),
        b["id"]: live(),
        "M-unknown": live(state="flying")}}})
    assert out["live_status_problems"] == [
        f"status.machines.{b['id']}: agent agent-{a['id']} is not scoped to this machine",
        "status.machines.M-unknown: agent agent-" + a["id"] + " is not scoped to this machine"]
    out = plant.call("POST", "/agents/heartbeat", b["agent"], json={"status": {"machines": {
        b["id"]: live(state="flying")}}})
    assert out["live_status_problems"] == [
        f"status.machines.{b['id']}.state: Input should be 'building', 'active', 'idle', 'offline' or 'unknown'"]
    out = plant.call("POST", "/agents/heartbeat", b["agent"], json={"status": {"machines": [1, 2]}})
    assert out["live_status_problems"] == ["status.machines must be an object keyed by machine id"]
    snap = plant.call("GET", "/live/machines", "production_manager")
    assert b["id"] not in snap
    got = snap[a["id"]]
    assert (got["state"], got["layer"], got["layers_total"], got["progress_pct"], got["agent"], got["stale"]) == \
        ("building", 50, 200, 25.0, f"agent-{a['id']}", False)


def test_stream_sends_the_snapshot_then_each_change(plant, ui_server):
    m = plant.machine()
    plant.call("POST", "/agents/heartbeat", m["agent"], json={"status": {"machines": {m["id"]: live()}}})
    with httpx.Client(base_url=ui_server.url, timeout=30) as c, \
            c.stream("GET", "/api/v1/live/machines/stream", headers=plant.h("production_manager")) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()

        def next_event():
            name = data = None
            for line in lines:
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                elif line == "" and name:
                    return name, data

        name, data = next_event()
        assert name == "snapshot" and data[m["id"]]["state"] == "idle"
        plant.call("POST", "/agents/heartbeat", m["agent"], json={"status": {"machines": {
            m["id"]: live(state="building", job="JOB-9", layer=1, layers_total=10)}}})
        name, data = next_event()
        while data.get("machine_id") != m["id"]:  # a repeat of another machine is allowed, never a loss
            name, data = next_event()
        assert name == "machine"
        assert (data["machine_id"], data["state"], data["job"], data["progress_pct"]) == (m["id"], "building",
                                                                                           "JOB-9", 10.0)
    r = httpx.get(ui_server.url + "/api/v1/live/machines/stream", headers=plant.h("operator"))
    assert (r.status_code, r.json()["code"]) == (403, "role_not_allowed")


def test_badge_and_pin_give_a_short_kiosk_token(plant, badges, ui_server):
    r = plant.client.post("/api/v1/auth/token", data={"username": "40017", "password": "2468", "scope": "kiosk"})
    assert r.status_code == 200 and r.json()["expires_in"] == 600
    claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["badge_pin"] and claims["sub"] == str(plant.uid("operator"))
    # Without scope=kiosk the badge number is not a user id.
    r = plant.client.post("/api/v1/auth/token", data={"username": "40017", "password": "2468"})
    assert (r.status_code, r.json()["detail"]) == (401, "User id or password is not correct, or the account is locked for a while after repeated failures")
    r = plant.client.post("/api/v1/auth/token", data={"username": "40017", "password": "0000", "scope": "kiosk"})
    assert (r.status_code, r.json()) == (401, {"code": "login_failed", "detail": "Badge or PIN is not correct, or the account is locked for a while after repeated failures"})
    entries = plant.call("GET", "/audit/entries", "quality_engineer",
                         params={"record_type": "user", "record_id": str(plant.uid("operator")), "limit": 1000})
    assert json.loads(entries[-1]["new_values"]) == {"why": "wrong PIN", "credential": "badge"}
    r = plant.client.post("/api/v1/auth/token", data={"username": "40017", "password": "2468", "scope": "kiosk"})
    assert r.status_code == 200  # a good login resets the counter


def test_badge_rules(plant, badges):
    r = plant.client.put(f"/api/v1/users/{plant.uid('clinician')}/badge", headers=plant.h("admin"),
                         json={"badge_number": "40017", "pin": "5555"})
    assert (r.status_code, r.json()["detail"]) == (409, "Badge 40017 belongs to another person")
    r = plant.client.put(f"/api/v1/users/{plant.uid('clinician')}/badge", headers=plant.h("admin"),
                         json={"badge_number": "40099", "pin": "12"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "pin"]
    r = plant.client.put(f"/api/v1/users/{plant.uid('clinician')}/badge", headers=plant.h("production_manager"),
                         json={"badge_number": "40099", "pin": "5555"})
    assert (r.status_code, r.json()["code"]) == (403, "role_not_allowed")
    user = plant.call("GET", "/users", "admin")
    assert {u["username"]: u["badge_number"] for u in user if u["badge_number"]} == {"operator": "40017",
                                                                                   "operator2": "40018"}
    assert all("pin" not in k for u in user for k in u)


def test_alert_state_phase_trends_and_silence_reach_the_dashboard(plant):
    m = plant.machine()
    now_ns = int(time.time() * 1e9)
    alerts = [{"severity": "alarm", "message": "chamber_o2 1031 ppm is above the alarm limit 1000 ppm", "ts_ns": NS,
               "kind": "excursion", "key": "excursion:chamber_o2", "state": "cleared", "since_ns": NS,
               "cleared_ns": NS + 5}]
    trend = {"signal": "chamber_o2", "unit": "ppm", "limits": {"alarm_high": 1000.0},
             "points": [[1767225600, 100.0, 1031.0, 200.0]]}
    plant.call("POST", "/agents/heartbeat", m["agent"], json={"status": {"machines": {m["id"]: live(
        state="active", phase="HOLDING", kind="furnace", alerts=alerts, trends=[trend],
        last_data_ns=now_ns - 45 * 10**9)}}})
    got = plant.call("GET", "/live/machines", "production_manager")[m["id"]]
    assert (got["state"], got["phase"], got["alerts"][0]["state"], got["trends"][0]["points"]) == \
        ("active", "HOLDING", "cleared", [[1767225600, 100.0, 1031.0, 200.0]])
    assert 44 <= got["silent_s"] < 60, "a connected machine silent for 45 s says so"
    # Trends come with every few heartbeats only: one without them keeps the last ones.
    plant.call("POST", "/agents/heartbeat", m["agent"], json={"status": {"machines": {m["id"]: live(
        state="active", phase="COOLING", last_data_ns=now_ns)}}})
    got = plant.call("GET", "/live/machines", "production_manager")[m["id"]]
    assert (got["phase"], got["trends"], got["silent_s"]) == ("COOLING", [trend], None)


def test_display_token_reads_the_dashboard_only_and_its_stream_ends_when_revoked(plant, ui_server):
    issued = plant.call("POST", "/display-tokens", "production_manager", 201, json={"label": "Hall 2 wall"})
    assert issued["token"].startswith("amtdisplay_") and issued["url"] == f"/ui/wall#token={issued['token']}"
    wall = {"Authorization": f"Bearer {issued['token']}"}
    assert "machines" in plant.call("GET", "/dashboard/overview", wall)
    plant.call("GET", "/live/machines", wall)
    for method, path in (("GET", "/kiosk/lookup?code=JOB-1"), ("GET", "/auth/me"), ("GET", "/display-tokens"),
                         ("POST", "/machines/x/maintenance"), ("GET", "/audit/entries")):
        r = plant.client.request(method, "/api/v1" + path, headers=wall, json={})
        assert (r.status_code, r.json().get("code")) == (403, "role_not_allowed"), (method, path, r.text)
    plant.call("GET", "/display-tokens", "operator", 403)
    with httpx.Client(base_url=ui_server.url, timeout=30) as c, \
            c.stream("GET", "/api/v1/live/machines/stream", headers=wall) as r:
        events = sse_events(r)
        assert next(events)[0] == "snapshot"
        plant.call("POST", f"/display-tokens/{issued['id']}/revoke", "production_manager",
                   json={"reason": "screen moved to hall 3"})
        revoked = time.monotonic()
        name, data = next((n, d) for n, d in events if n == "session_ended")
        assert data["code"] == "display_token_invalid" and "revoked" in data["detail"]
        assert time.monotonic() - revoked < 8
    r = plant.client.get("/api/v1/live/machines", headers=wall)
    assert (r.status_code, r.json()["code"]) == (401, "display_token_invalid")
    [row] = [d for d in plant.call("GET", "/display-tokens", "admin") if d["id"] == issued["id"]]
    assert row["revoke_reason"] == "screen moved to hall 3" and "token" not in row
    actions = [e["action"] for e in plant.call("GET", "/audit/entries", "quality_engineer", params={
        "record_type": "display_token", "record_id": str(issued["id"])})]
    assert actions == ["display_token_created", "display_token_revoked"]


def test_a_persons_stream_ends_saying_so_when_the_session_ends(plant, ui_server, app):
    from server.auth.service import issue_access_token
    from server.db import session_scope
    from server.models import User

    with session_scope(app.state.sessionmaker) as s:
        token, _ = issue_access_token(s, user=s.get(User, plant.uid("quality_engineer")), minutes=3 / 60)
    with httpx.Client(base_url=ui_server.url, timeout=30) as c, \
            c.stream("GET", "/api/v1/live/machines/stream", headers={"Authorization": f"Bearer {token}"}) as r:
        events = sse_events(r)
        assert next(events)[0] == "snapshot"
        name, data = next((n, d) for n, d in events if n == "session_ended")
    assert data == {"code": "token_expired", "detail": "Access token expired; log in again"}
