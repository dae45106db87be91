"""The wall display in Chromium: a manager creates its link on the dashboard; the screen shows each machine in its
own phase with 30-minute sparklines and alert states, stays live past a person's session lifetime, and says so
when it is revoked. Beside it, a person's dashboard whose session ends says that, not "Live"."""

from __future__ import annotations

import json
import time

from playwright.sync_api import expect
from uikit import screenshot

PASSWORD = "correct-horse-battery"
SHORT_SESSION_S = 8  # stands in for the 15-minute access token: the wall must outlive it, a person's page not


def furnace_report(phase: str, *, alarm: str | None = None, cleared: bool = False) -> dict:
    now = time.time_ns()
    minute = now // 60_000_000_000 * 60
    alerts = []
    if alarm:
        alerts.append({"severity": "alarm", "message": alarm, "ts_ns": now - 10**10, "kind": "excursion",
                       "key": "excursion:furnace_temp", "state": "cleared" if cleared else "active",
                       "since_ns": now - 10**10, "cleared_ns": now if cleared else None})
    # A one-minute spike to 1031 among 29 calm minutes: the sparkline must show it as a point beyond the limit.
    points = [[minute - 60 * (29 - i), 840.0, 1031.0 if i == 20 else 850.0, 845.0] for i in range(30)]
    return {"connected": True, "state": "active", "phase": phase, "kind": "furnace", "alerts": alerts,
            "updated_ns": now, "last_data_ns": now,
            "trends": [{"signal": "furnace_temp", "unit": "degC", "limits": {"alarm_high": 1000.0},
                        "points": points}]}


def heartbeat(plant, m, report):
    plant.call("POST", "/agents/heartbeat", m["agent"], json={"status": {"machines": {m["id"]: report}}})


def test_wall_display_outlives_a_session_shows_phase_trend_alerts_and_says_when_revoked(
        browser, ui_server, plant, app):
    from server.auth.service import issue_access_token
    from server.db import session_scope
    from server.models import User

    m = plant.machine()
    heartbeat(plant, m, furnace_report("HEATING", alarm="furnace_temp 1031 degC is above the alarm limit 1000 degC"))

    # The manager creates the display link on the dashboard; it is shown once.
    manager = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    manager.goto(ui_server.url + "/ui/dashboard")
    manager.fill("#username", "production.manager")
    manager.fill("#secret", PASSWORD)
    manager.press("#secret", "Enter")
    manager.fill("#display-label", "Hall 2 wall")
    manager.click("#display-form button[type=submit]")
    link = manager.locator(".display-link").text_content()
    assert link.startswith(ui_server.url + "/ui/wall#token=amtdisplay_")
    expect(manager.locator("#displays tr")).to_contain_text(["Hall 2 wall"])

    # A person's dashboard with a short session, beside the wall.
    with session_scope(app.state.sessionmaker) as s:
        user = s.get(User, plant.uid("quality_engineer"))
        token, _ = issue_access_token(s, user=user, minutes=SHORT_SESSION_S / 60)
    me = plant.call("GET", "/auth/me", "quality_engineer")
    person = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    person.goto(ui_server.url + "/ui/dashboard")
    person.evaluate("s => sessionStorage.setItem('amtrace.session', s)", json.dumps({"token": token, "me": me}))
    person.reload()
    expect(person.locator("#live-status")).to_have_text("Live: machine states update by themselves.")

    wall = browser.new_context(viewport={"width": 1920, "height": 1080}).new_page()
    wall.goto(link)
    assert "token" not in wall.url, "the secret leaves the address bar at once"
    expect(wall.locator("#live-status")).to_have_text("Live: machine states update by themselves.")
    card = wall.locator(f"#machine-{m['id']}")
    expect(card.locator("[data-live-state]")).to_have_text("heating")
    expect(card.locator("[data-live-state]")).to_have_attribute("class", "badge active")
    expect(card.locator(".trend figcaption")).to_contain_text("furnace_temp: 845 degC")
    expect(card.locator(".trend figcaption")).to_contain_text("max 1031")
    expect(card.locator(".trend circle.excursion")).to_have_count(1)
    expect(card.locator(".alerts li")).to_have_attribute("data-alert-state", "active")
    assert wall.locator("#login, #logout, form, button").count() == 0, "a wall display has no actions"
    screenshot(wall, "wall-display")

    # The person's session ends: their page says so and goes back to the log-in, never "Live".
    expect(person.locator("#login-message")).to_have_text(
        "Your session ended: Access token expired; log in again", timeout=(SHORT_SESSION_S + 15) * 1000)
    expect(person.locator("#app")).to_be_hidden()

    # Past the session lifetime the wall is still live and still updating.
    time.sleep(2)
    heartbeat(plant, m, furnace_report("HOLDING", alarm="furnace_temp 1031 degC is above the alarm limit 1000 degC",
                                       cleared=True))
    expect(card.locator("[data-live-state]")).to_have_text("holding")
    expect(card.locator(".alerts li")).to_have_attribute("data-alert-state", "cleared")
    expect(wall.locator("#live-status")).to_have_text("Live: machine states update by themselves.")

    # Revoked: the wall says it is no longer live, and why.
    [row] = [d for d in plant.call("GET", "/display-tokens", "production_manager") if d["label"] == "Hall 2 wall"]
    plant.call("POST", f"/display-tokens/{row['id']}/revoke", "production_manager", json={"reason": "screen replaced"})
    expect(wall.locator("#live-status")).to_have_text(
        "Not live: This wall display's token was revoked or is unknown; ask a production manager for a new "
        "display link", timeout=15_000)
    for p in (manager, person, wall):
        p.context.close()
