"""The production manager's dashboard in Chromium: machines with live state that updates without a reload
(agent heartbeats → server-sent events), qualification, deadlines at risk, open nonconformities, maintenance."""

from __future__ import annotations

import pytest
from uikit import screenshot
from playwright.sync_api import expect

PASSWORD = "correct-horse-battery"
NS = 1767225600000000000


def heartbeat(plant, m, **state):
    """The machine's agent reports live state in its heartbeat, as the edge does."""
    live = {"connected": True, "state": "idle", "job": None, "layer": None, "layers_total": None,
            "software_revision": "4.2.1", "alerts": [], "updated_ns": NS, **state}
    return plant.call("POST", "/agents/heartbeat", m["agent"], json={"status": {"machines": {m["id"]: live}}})


def login(page, url, user):
    page.goto(url + "/ui/dashboard")
    page.fill("#username", user)
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")


@pytest.fixture(scope="module")
def floor(plant):
    ctx = plant.ready()
    idle = plant.machine()
    plant.scope(idle["id"])
    heartbeat(plant, idle, state="idle")
    heartbeat(plant, ctx["machine"], state="building", job=f"JOB-{ctx['job']['id']}", layer=412, layers_total=2000)
    plant.call("POST", "/nonconformities", "operator", 201, json={
        "kind": "surface", "description": "Powder bed short feed at layer 400", "machine_id": ctx["machine"]["id"]})
    return {"ctx": ctx, "idle": idle}


def test_machine_state_updates_without_reload(page, ui_server, plant, floor):
    ctx, idle = floor["ctx"], floor["idle"]
    mid = ctx["machine"]["id"]
    login(page, ui_server.url, "production.manager")
    expect(page.locator("#who")).to_have_text("Paula Manager (production manager)")
    expect(page.locator("#live-status")).to_have_text("Live: machine states update by themselves.")
    card = page.locator(f"#machine-{mid}")
    expect(card.locator("[data-live-state]")).to_have_text("building")
    expect(card.locator(".layer")).to_have_text("Layer 412 of 2000 (20.6 %)")
    expect(card.locator(".scopes li")).to_have_text("qualified LPBF / Ti-6Al-4V ELI / acetabular cup · valid until "
                                                    + page.evaluate("""d => new Date(d).toLocaleDateString('en-GB',
                                                        {day: 'numeric', month: 'short', year: 'numeric'})""",
                                                                    ctx["scope"]["valid_until"]))
    expect(card.locator(".overdue")).to_have_text("1 open nonconformity")
    expect(page.locator("#ncs tr")).to_have_count(1)
    expect(page.locator("#ncs tr td").nth(3)).to_have_text("Powder bed short feed at layer 400")
    expect(page.locator(f"#machine-{idle['id']} [data-live-state]")).to_have_text("idle")
    page.evaluate("window.notReloaded = true")
    screenshot(page, "dashboard")

    heartbeat(plant, ctx["machine"], state="building", job=f"JOB-{ctx['job']['id']}", layer=1500, layers_total=2000,
              alerts=[{"severity": "alarm", "message": "chamber O2 1210 ppm above 1000 ppm", "ts_ns": NS}])
    expect(card.locator(".layer")).to_have_text("Layer 1500 of 2000 (75 %)")
    expect(card.locator(".alerts li")).to_have_count(1)
    expect(card.locator(".alerts li")).to_contain_text("ALARM since")
    expect(card.locator(".alerts li")).to_contain_text("chamber O2 1210 ppm above 1000 ppm")
    expect(card.locator(".alerts li")).to_have_attribute("data-alert-state", "active")
    # The cause ended: the alert says so, with the time, instead of staying as if it were still true.
    heartbeat(plant, ctx["machine"], state="idle", connected=True, alerts=[{
        "severity": "alarm", "message": "chamber O2 1210 ppm above 1000 ppm", "ts_ns": NS, "state": "cleared",
        "key": "excursion:chamber_o2", "since_ns": NS, "cleared_ns": NS + 60 * 10**9}])
    expect(card.locator(".alerts li")).to_have_attribute("data-alert-state", "cleared")
    expect(card.locator(".alerts li")).to_contain_text("cleared ")
    expect(card.locator("[data-live-state]")).to_have_text("idle")
    expect(card.locator(".layer")).to_have_count(0)
    assert page.evaluate("window.notReloaded") is True  # the same page, updated by server-sent events

    # Maintenance that needs requalification, logged from the dashboard, shows on the machine's scope.
    page.select_option("#maint-machine", mid)
    page.select_option("#maint-kind", "laser_replaced")
    page.fill("#maint-description", "laser module exchanged after power drop")
    page.click("#maint-form button[type=submit]")
    expect(page.locator("#maint-message")).to_have_text(f"Maintenance logged on {mid}.")
    expect(card.locator(".scopes .badge")).to_have_text("requalification required")
    scope = plant.call("GET", f"/qualification/scopes/{ctx['scope']['id']}", "quality_engineer")
    assert scope["state"] == "requalification_required"


def device_for_surgery_in(plant, days: int) -> str:
    """A planned device whose case has its surgery in `days` days (case deadline = surgery − 2 days)."""
    m = plant.machine()
    plant.scope(m["id"])
    lot = plant.lot()
    case = plant.case(surgery_in_days=days)
    it = plant.iteration(plant.design(case["id"])["id"])
    return plant.job(m["id"], lot["id"], [it["id"]])["devices"][0]["device_code"]


def test_deadlines_at_risk_most_urgent_first(page, ui_server, plant, floor):
    later = device_for_surgery_in(plant, 3)    # every step due tomorrow 00:00 UTC: within the next 24 h
    late = device_for_surgery_in(plant, 2)     # every step was due today 00:00 UTC: overdue
    login(page, ui_server.url, "production.manager")
    rows = page.locator("#at-risk tr")
    expect(rows).to_have_count(14)
    codes = [t.split("\t")[0] for t in rows.all_inner_texts()]
    assert codes == [late] * 7 + [later] * 7
    assert [r.locator("td").nth(1).inner_text() for r in rows.all()[:7]] == [
        "Build", "Post-processing", "Cleaning", "Sterilization", "Inspection", "Release", "Delivery"]
    assert rows.nth(0).locator("td").nth(3).inner_text().startswith("OVERDUE since ")
    assert rows.nth(7).locator("td").nth(3).inner_text().endswith(" h left)")
    screenshot(page, "dashboard-at-risk")


def test_dashboard_refuses_an_operator(page, ui_server, plant, floor):
    login(page, ui_server.url, "operator")
    expect(page.locator("#login-message")).to_have_text(
        "This page is for production manager, quality engineer, admin; you are logged in as operator.")
    assert page.locator("#app").is_hidden()
    assert page.evaluate("sessionStorage.getItem('amtrace.session')") is None
