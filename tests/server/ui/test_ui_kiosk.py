"""The operator story at the kiosk, in a real headless Chromium against the real server, by key presses only:
log in with badge and PIN, scan a device code, see "cleared", request the start, record and sign steps with the
PIN, and see "not cleared" with the reason after the printer's software revision changed."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest
from uikit import screenshot, tab_to
from playwright.sync_api import expect

from server.security import content_sha256

PASSWORD = "correct-horse-battery"


def report_check(plant, ctx, job, *, passed=True, detail="identical: SHA-256 and mesh fingerprint match"):
    """The machine's agent reports the build-file check, as the edge does after hashing the received file."""
    return plant.call("POST", f"/agents/machines/{ctx['machine']['id']}/build-file-checks", ctx["machine"]["agent"],
                      201, json={"job_id": job["id"], "file_name": "cup.stl", "sha256": ctx["sha"],
                                 "passed": passed, "detail": detail})


def api_step(plant, code, stage):
    return next(s for s in plant.call("GET", f"/devices/{code}/stages", "operator") if s["stage"] == stage)


def run_and_accept(plant, code, stage, result):
    """A step done outside the kiosk, through the API with the password (performer) and a second person."""
    step = api_step(plant, code, stage)
    if step["state"] == "pending":
        plant.call("POST", f"/stages/steps/{step['id']}/start", "operator")
    if step["state"] in ("pending", "in_progress"):
        plant.call("POST", f"/stages/steps/{step['id']}/complete", "operator",
                   json={"result": result, "password": PASSWORD})
    plant.call("POST", f"/stages/steps/{step['id']}/accept", "production_manager",
               json={"judgement": "complete and within limits", "password": PASSWORD})


def login_by_keys(page, number, pin):
    page.keyboard.type(number)
    page.keyboard.press("Tab")
    page.keyboard.type(pin)
    page.keyboard.press("Enter")


def scan(page, code):
    """A barcode scanner types the code and presses Enter."""
    tab_to(page, "#code")
    page.keyboard.press("Control+A")
    page.keyboard.type(code)
    page.keyboard.press("Enter")


@pytest.fixture(scope="module")
def story(plant, badges):
    ctx = plant.ready()
    second = plant.job(ctx["machine"]["id"], ctx["lot"]["id"], [ctx["iteration"]["id"]])
    report_check(plant, ctx, ctx["job"])
    report_check(plant, ctx, second)
    plant.call("POST", "/agents/heartbeat", ctx["machine"]["agent"], json={"status": {"machines": {
        ctx["machine"]["id"]: {"connected": True, "state": "idle", "job": None, "layer": None, "layers_total": None,
                               "software_revision": "4.2.1", "alerts": [], "updated_ns": 1767225600000000000}}}})
    ctx["second"] = second
    ctx["code"] = ctx["job"]["devices"][0]["device_code"]
    return ctx


def test_operator_story_by_keyboard(page, ui_server, plant, story):
    number, pin = "40017", "2468"
    page.goto(ui_server.url + "/ui/kiosk")
    assert page.evaluate("document.activeElement.id") == "username"  # the badge field waits for the scanner
    screenshot(page, "kiosk-login")

    login_by_keys(page, number, "9999")
    expect(page.locator("#login-message")).to_have_text("Badge or PIN is not correct, or the account is locked for a while after repeated failures")
    page.keyboard.press("Shift+Tab")  # the PIN field keeps the focus after a refusal; back to the badge
    page.keyboard.press("Control+A")
    login_by_keys(page, number, pin)
    expect(page.locator("#who")).to_have_text("Otto Operator (operator)")
    assert page.evaluate("document.activeElement.id") == "code"

    scan(page, "NO-SUCH-CODE")
    expect(page.locator("#scan-message")).to_have_text("No job or device has the code NO-SUCH-CODE. "
                                                       "Check the label and scan again.")

    code, job = story["code"], story["job"]
    scan(page, code)
    expect(page.locator("#verdict-title")).to_have_text("✔ Cleared to build")
    assert page.locator("#verdict").get_attribute("aria-live") == "assertive"
    assert page.locator("#verdict-reasons li").count() == 0
    assert page.locator(".filecheck-title").all_inner_texts() == ["✔ Identical to the approved design"]
    facts = page.locator("#job-facts").inner_text()
    assert f"{story['machine']['id']} · EOS M 290" in facts and f"JOB-{job['id']} · planned" in facts
    assert "idle" in facts
    screenshot(page, "kiosk-cleared")

    tab_to(page, "#start-button")
    page.keyboard.press("Enter")
    expect(page.locator("#start-message")).to_have_class("message ok")
    decision = plant.call("GET", "/jobs/" + str(job["id"]), "production_manager")
    assert decision["state"] == "released"
    assert page.locator("#start-message").inner_text().startswith(f"Start cleared for JOB-{job['id']} (gate decision ")
    assert page.locator("#start-message").inner_text().endswith(f"Build started for {code}.")
    assert api_step(plant, code, "build")["state"] == "in_progress"

    # The build is signed as performed at the kiosk, then reviewed; post-processing and cleaning go through the API.
    tab_to(page, f"[data-device='{code}'] form[data-sign-step] input[name=cycle]")
    page.keyboard.type("B-7781")
    page.keyboard.press("Tab")   # result: Passed is preselected
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.type(pin)
    page.keyboard.press("Enter")
    expect(page.locator("#start-message")).to_have_text("Build signed as performed. It now waits for review.")
    build = api_step(plant, code, "build")
    assert (build["state"], build["result"]) == ("completed", "Build cycle B-7781: passed")
    run_and_accept(plant, code, "build", None)
    run_and_accept(plant, code, "post_processing", "support removal and stress relief 800 C 2 h, furnace F-2")
    run_and_accept(plant, code, "cleaning", "ultrasonic wash cycle W-55, residue test passed")

    scan(page, code)
    expect(page.locator("[data-start-step]")).to_have_text("Start sterilization")
    tab_to(page, "[data-start-step]")
    page.keyboard.press("Enter")
    form = f"[data-device='{code}'] form[data-sign-step]"
    page.wait_for_selector(form)
    assert page.evaluate("document.activeElement.name") == "cycle"  # the form takes the focus
    page.keyboard.type("ST-0042")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    page.keyboard.type("134 C 5 min, F0 in range")
    page.keyboard.press("Tab")
    page.keyboard.type("1111")
    page.keyboard.press("Enter")
    expect(page.locator(f"{form} .message")).to_have_text("Not signed: the PIN is not correct. Enter your PIN again.")
    assert page.evaluate("document.activeElement.name") == "pin"
    screenshot(page, "kiosk-sign-step")
    page.keyboard.type(pin)
    page.keyboard.press("Enter")
    expect(page.locator("#start-message")).to_have_text("Sterilization signed as performed. It now waits for review.")

    step = api_step(plant, code, "sterilization")
    result = "Sterilization cycle ST-0042: passed. 134 C 5 min, F0 in range"
    assert (step["state"], step["result"], step["completed_by"]) == ("completed", result, plant.uid("operator"))
    sigs = plant.call("GET", "/audit/signatures", "quality_engineer",
                      params={"record_type": "stage_completion", "record_id": str(step["id"])})
    assert [(s["printed_name"], s["meaning"], s["signer_role"]) for s in sigs] == \
        [("Otto Operator", "performed", "operator")]
    assert sigs[0]["record_sha256"] == content_sha256({"step_id": step["id"], "device_code": code,
                                                       "stage": "sterilization", "result": result,
                                                       "performed_by": plant.uid("operator")})
    refused = plant.call("GET", "/audit/entries", "quality_engineer",
                         params={"record_type": "stage_completion", "record_id": str(step["id"])})
    assert [e["action"] for e in refused] == ["signature_refused", "signed"]
    assert plant.call("GET", "/audit/verify", "quality_engineer")["ok"] is True

    # The printer's control software changes. The lead's end-to-end test drives this from the OPC UA simulator
    # through the agent; here the identity report goes through the same agent endpoint the agent calls.
    plant.report_identity(story["machine"], software="4.3.0")
    scan(page, f"JOB-{story['second']['id']}")
    expect(page.locator("#verdict-title")).to_have_text("✖ Not cleared to build")
    today = datetime.now(timezone.utc)
    assert page.locator("#verdict-reasons li").all_inner_texts() == [
        f"Machine requires requalification: software changed from 4.2.1 to 4.3.0 on {today.day} {today:%b}"]
    assert page.locator("#verdict-reasons li").get_attribute("data-code") == "machine_not_qualified"
    assert page.locator("#start-button").is_disabled()
    screenshot(page, "kiosk-not-cleared")


def test_problem_report_with_photo_blocks_the_device(page, ui_server, plant, story, tmp_path):
    ctx = plant.ready()
    report_check(plant, ctx, ctx["job"])
    code = ctx["job"]["devices"][0]["device_code"]
    page.goto(ui_server.url + "/ui/kiosk")
    login_by_keys(page, "40017", "2468")
    page.wait_for_selector("#app:not([hidden])")
    scan(page, code)
    page.wait_for_selector("#verdict.cleared")
    tab_to(page, "#nc-button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#nc-dialog[open]")
    assert page.evaluate("document.activeElement.id") == "nc-kind"
    page.select_option("#nc-kind", "surface")
    page.keyboard.press("Tab")
    page.keyboard.type("Crack at the rim, 3 mm")
    # A small PNG taken with the kiosk camera (file chooser in the test); a real image: the server reads it.
    from test_ui_workflows import png as make_png

    photo = tmp_path / "rim.png"
    png = make_png(16, 12)
    photo.write_bytes(png)
    page.set_input_files("#nc-photo", str(photo))
    screenshot(page, "kiosk-report-problem")
    tab_to(page, "#nc-form button[value=send]")
    page.keyboard.press("Enter")
    page.wait_for_selector("#start-message.ok")
    msg = page.locator("#start-message").inner_text()
    nc_id = int(msg.split("nonconformity ")[1].split(".")[0])
    assert msg == f"Problem reported as nonconformity {nc_id}. The device is blocked until quality decides."
    nc = plant.call("GET", f"/nonconformities/{nc_id}", "quality_engineer")
    assert (nc["kind"], nc["description"], nc["state"], nc["raised_by"]) == \
        ("surface", "Crack at the rim, 3 mm", "open", "user:operator")
    sha = hashlib.sha256(png).hexdigest()
    assert nc["details"] == {"photo_sha256": sha, "photo_type": "image/png", "photo_bytes": len(png)}
    kept = Path(ui_server.settings.file_store) / "nonconformity-photos" / f"{sha}.png"
    assert kept.read_bytes() == png
    assert page.locator(f"[data-device='{code}'] .reasons li").all_inner_texts() == \
        [f"Nonconformity {nc_id} (surface): Crack at the rim, 3 mm"]
    assert page.locator("#verdict-reasons li").first.get_attribute("data-code") == "open_nonconformity"


def test_kiosk_logs_out_after_inactivity(page, ui_server, badges):
    page.clock.install()  # the page's timers run on a clock the test moves: no waiting, no timing
    page.goto(ui_server.url + "/ui/kiosk")
    # Badges read like B-1001: the field must not open a digits-only keypad on a tablet (issue 13).
    assert page.locator("#username").get_attribute("inputmode") is None
    login_by_keys(page, "40018", "1357")
    expect(page.locator("#who")).to_have_text("Olga Operator (operator)")
    page.clock.run_for(119_000)
    assert page.locator("#app").is_visible()
    page.keyboard.press("Tab")  # any key press restarts the inactivity timer
    page.clock.run_for(119_000)
    assert page.locator("#app").is_visible()
    page.clock.run_for(2_000)
    assert page.locator("#login").is_visible() and page.locator("#app").is_hidden()
    assert page.locator("#login-message").inner_text() == "You were logged out after 2 minutes without activity."
    assert page.evaluate("sessionStorage.getItem('amtrace.session')") is None


@pytest.mark.parametrize("width, height", [(360, 740), (390, 844), (1920, 1080)])
def test_the_kiosk_fits_phone_to_wall_screens_without_sideways_scrolling(browser, ui_server, badges, width, height):
    """Issue 13: at 390 px the page was 453 px wide and "Log out" was off screen."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(ui_server.url + "/ui/kiosk")
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        login_by_keys(page, "40018", "1357")
        expect(page.locator("#who")).to_have_text("Olga Operator (operator)")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
        box = page.locator("#logout").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box
        page.locator("#logout").click()  # reachable, and it works
        expect(page.locator("#login")).to_be_visible()
    finally:
        context.close()
