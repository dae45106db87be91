"""Delivery in Chromium against the real server (R17): the production manager makes a delivery list of a released
device and dispatches it with a signature; the case's clinician sees the label data, signs for it, and the page
shows each signature's manifestation."""

from __future__ import annotations

from playwright.sync_api import expect

from stagekit import PASSWORD, STAGES, run_stage
from test_ui_workflows import login, log_out_and_in
from uikit import screenshot
from waiting import wait_until


def test_production_dispatches_a_delivery_list_and_the_clinician_signs_for_it(page, ui_server, plant):
    ctx = plant.ready()
    assert plant.gate(ctx)["allowed"]
    code = ctx["job"]["devices"][0]["device_code"]
    for stage in STAGES:
        run_stage(plant, code, stage)
    login(page, ui_server.url, "/ui/delivery", "production.manager")
    row = page.locator(f"#ready tr[data-device='{code}']")
    expect(row).to_contain_text("complete")
    row.locator("input[type=checkbox]").check()
    page.fill("#ready-note", "courier, sterile barrier checked")
    page.click("#ready-form button[type=submit]")
    # The form posts in the background: wait for the list to exist rather than race the request.
    [listed] = wait_until(lambda: [s for s in plant.call("GET", "/shipments?state=open", "production_manager")
                                   if s["items"][0]["device_code"] == code], 15, "the dispatched delivery list")
    card = page.locator(f"#list-{listed['id']}")
    expect(card.locator("[data-state]").first).to_have_attribute("data-state", "open")
    expect(card).to_contain_text("total hip arthroplasty, cementless acetabular component")
    expect(card).to_contain_text("left acetabulum")
    expect(page.locator(f"#ready tr[data-device='{code}']")).to_have_count(0)
    page.fill(f"#dispatch-{listed['id']}-password", "not-my-password")
    page.click(f"#dispatch-{listed['id']} button[type=submit]")
    expect(page.locator(f"#dispatch-{listed['id']} .message")).to_contain_text("password is not correct")
    page.fill(f"#dispatch-{listed['id']}-password", PASSWORD)
    page.click(f"#dispatch-{listed['id']} button[type=submit]")
    expect(card.locator("h3 [data-state]")).to_have_attribute("data-state", "dispatched")
    expect(card.locator(".delivery-item .locked")).to_contain_text("Dispatched: Signed by Paula Manager (production "
                                                                   "manager), meaning: performed")
    screenshot(page, "delivery-dispatched")

    log_out_and_in(page, "clinician")
    expect(card.locator("h3 [data-state]")).to_have_attribute("data-state", "dispatched")
    expect(page.locator("#delivery-role")).to_contain_text("Lists addressed to you")
    assert page.locator("#ready-card").is_hidden(), "production's part of the page is not the clinician's"
    expect(card).to_contain_text(ctx["case"]["patient_ref"])  # the label says for whom: the clinician's own case
    page.fill(f"#accept-{listed['id']}-password", PASSWORD)
    page.click(f"#accept-{listed['id']} button[type=submit]")
    expect(card.locator("h3 [data-state]")).to_have_attribute("data-state", "accepted")
    expect(card.locator(".received")).to_contain_text("Received: Signed by Dr. Clara Clinician (clinician), meaning: "
                                                      "reviewed")
    screenshot(page, "delivery-received")
    assert plant.call("GET", f"/devices/{code}", "production_manager")["state"] == "delivered"
