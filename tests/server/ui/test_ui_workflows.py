"""Quality-engineering workflows in Chromium against the real server: a requalification started from the
dashboard and carried through locked criteria, a failing and a passing coupon, rejection and signed approval;
design approval signed by the design engineer and the clinician; recipe approval by the quality engineer."""

from __future__ import annotations

import struct
import zlib
from datetime import date, datetime, timedelta, timezone

from uikit import screenshot, tab_to
from playwright.sync_api import expect

PASSWORD = "correct-horse-battery"
SCOPE_LABEL = "LPBF / Ti-6Al-4V ELI / acetabular cup"
VALID_UNTIL = str(date.today() + timedelta(days=365))


def utc(iso: str) -> str:
    """The page's date/time of a signature or record: UTC to the second."""
    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def sig_line(sig: dict) -> str:
    """The signature manifestation the pages show (P11 11.50): printed name, role, meaning, date/time."""
    return (f"Signed by {sig['printed_name']} ({sig['signer_role'].replace('_', ' ')}), meaning: {sig['meaning']}, "
            f"on {utc(sig['signed_at'])}")


def login(page, url: str, path: str, user: str, password: str = PASSWORD) -> None:
    page.goto(url + path)
    page.fill("#username", user)
    page.fill("#secret", password)
    page.press("#secret", "Enter")


def log_out_and_in(page, user: str) -> None:
    page.click("#logout")
    page.fill("#username", user)
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")


def add_criterion(page, prop: str, minimum: str, unit: str) -> None:
    """Add one tensile-bar criterion by keys: Enter on 'Add criterion' puts the focus in the new row."""
    page.locator("#add-criterion").press("Enter")
    row = page.locator("#criteria-edit tr").last
    expect(row.locator("select")).to_be_focused()
    row.locator("select").select_option("tensile_bar")
    row.locator("[name=property]").fill(prop)
    row.locator("[name=min]").fill(minimum)
    row.locator("[name=unit]").fill(unit)


def enter_result(page, label: str, value: str, x: str = "20") -> None:
    page.select_option("#a-type", "tensile_bar")
    for field, v in (("#a-label", label), ("#a-x", x), ("#a-y", "20"), ("#a-z", "0"), ("#a-orientation", "Z"),
                     ("#a-property", "uts_mpa"), ("#a-value", value), ("#a-unit", "MPa")):
        page.fill(field, v)
    page.press("#a-unit", "Enter")


def test_requalification_from_the_dashboard_to_the_signed_approval(page, ui_server, plant):
    m = plant.machine()
    scope = plant.scope(m["id"])
    plant.call("POST", f"/machines/{m['id']}/maintenance", "production_manager", 201,
               json={"kind": "laser_replaced", "description": "laser module exchanged after power drop"})

    # The production manager starts the requalification on the dashboard.
    login(page, ui_server.url, "/ui/dashboard", "production.manager")
    expect(page.locator(f"#machine-{m['id']} .scopes .badge")).to_have_text("requalification required")
    page.select_option("#requal-scope", str(scope["id"]))
    page.select_option("#requal-risk", "partial")
    page.fill("#requal-rationale", "laser exchanged: OQ tensile coupons repeated")
    page.fill("#requal-protocol", "QP-LPBF-011 rev A")
    page.fill("#requal-valid", VALID_UNTIL)
    page.press("#requal-protocol", "Enter")
    expect(page.locator("#requal-message")).to_contain_text(" started (requalification)")  # then ask the API
    records = next(s for s in plant.call("GET", "/qualification-records/scopes", "quality_engineer")
                   if s["id"] == scope["id"])["records"]
    first = records[0]["id"]
    expect(page.locator("#requal-message")).to_have_text(
        f"Requalification {first} started (requalification); quality engineering continues it on the "
        "Qualification page.")

    # The manager's session does not open the quality engineer's page.
    page.goto(ui_server.url + "/ui/qualification")
    expect(page.locator("#login-message")).to_have_text(
        "This page is for quality engineer; you are logged in as production manager. Please log in.")
    assert page.locator("#app").is_hidden()
    page.fill("#username", "quality.engineer")
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")
    row = page.locator(f"#scopes tr[data-scope='{scope['id']}']")
    expect(row.locator("[data-scope-state]")).to_have_text("requalifying")
    row.locator(f"[data-open='{first}']").press("Enter")
    expect(page.locator("#record-title")).to_have_text(f"Requalification {first} · {m['id']} · {SCOPE_LABEL}")
    expect(page.locator("#record-title")).to_be_focused()
    trig = [t for t in plant.call("GET", f"/qualification/scopes/{scope['id']}/triggers", "quality_engineer")
            if t["requalification_id"] == first]
    assert len(trig) == 1 and trig[0]["kind"] == "maintenance"
    expect(page.locator("#triggers li")).to_have_text(
        [f"maintenance: {trig[0]['detail']} ({utc(trig[0]['occurred_at'])}, {trig[0]['source']})"])
    expect(page.locator("#record-facts dd")).to_contain_text(
        ["open", "requalifying", "partial", "laser exchanged: OQ tensile coupons repeated", "QP-LPBF-011 rev A"])

    # Results before the criteria are locked are refused, in words.
    enter_result(page, "TB-0", "900")
    expect(page.locator("#artefact-message")).to_have_text(
        "Acceptance criteria must be locked before any result is entered")
    add_criterion(page, "uts_mpa", "860", "MPa")
    page.locator("#lock-criteria").press("Enter")
    expect(page.locator("#criteria-message")).to_have_text(
        "Save the criteria before locking them: the lock covers the saved criteria.")
    page.locator("#save-criteria").press("Enter")
    expect(page.locator("#criteria-message")).to_have_text("1 criterion saved; lock them before entering results.")
    page.locator("#lock-criteria").press("Enter")
    expect(page.locator("#criteria-message")).to_have_text(
        "Criteria locked. They can no longer change; results are judged against them.")
    rec = plant.call("GET", f"/qualification/requalifications/{first}", "quality_engineer")
    expect(page.locator("#lock-line")).to_have_text(
        f"Locked on {utc(rec['criteria_locked_at'])} by Quentin Quality. SHA-256 {rec['criteria_sha256']}")
    expect(page.locator("#criteria-view td")).to_have_text(["tensile bar", "uts_mpa", "860", "–", "MPa", "1"])
    expect(page.locator("#criteria-open")).to_be_hidden()
    assert page.locator("#criteria-closed input, #criteria-closed select").count() == 0
    refused = plant.client.put(f"/api/v1/qualification/requalifications/{first}/criteria",
                               headers=plant.h("quality_engineer"), json={"criteria": [
                                   {"artefact_type": "tensile_bar", "property": "uts_mpa", "min": 800,
                                    "unit": "MPa"}]})
    assert refused.status_code == 409 and refused.json()["detail"] == (
        f"Acceptance criteria of requalification {first} are locked and cannot change")

    # A coupon below the locked minimum is judged FAIL by the server and blocks the approval.
    enter_result(page, "TB-1", "840")
    expect(page.locator("#artefact-message")).to_have_text("TB-1: uts_mpa 840 MPa — FAIL against the locked criterion.")
    expect(page.locator("#artefacts tr[data-artefact='TB-1'] td")).to_have_text(
        ["TB-1", "tensile bar", "20 / 20 / 0", "Z", "uts_mpa", "840 MPa", "FAIL"])
    blocker = "artefact TB-1 (tensile_bar at x=20 y=20 z=0) failed: uts_mpa 840 MPa"
    expect(page.locator("#approval-readiness")).to_have_text("Approval is not possible yet:")
    expect(page.locator("#blockers li")).to_have_text([blocker])
    page.fill("#approve-password", PASSWORD)
    page.press("#approve-password", "Enter")
    expect(page.locator("#approve-message")).to_have_text(f"Requalification cannot be approved: {blocker}")
    page.fill("#reject-reason", "TB-1 below 860 MPa; realign the laser and repeat")
    page.press("#reject-reason", "Enter")
    expect(page.locator("#approval-line")).to_have_text(
        "Rejected: TB-1 below 860 MPa; realign the laser and repeat. The scope is suspended.")
    expect(row.locator("[data-scope-state]")).to_have_text("suspended")
    expect(page.locator("#artefact-form")).to_be_hidden()

    # A second requalification from the suspended scope: locked criteria, a passing coupon, signed approval.
    page.select_option("#start-scope", str(scope["id"]))
    page.select_option("#start-risk", "partial")
    page.fill("#start-rationale", "laser realigned: tensile coupons repeated")
    page.fill("#start-protocol", "QP-LPBF-011 rev A")
    page.fill("#start-valid", VALID_UNTIL)
    page.press("#start-protocol", "Enter")
    second = first + 1
    expect(page.locator("#start-message")).to_have_text(f"Requalification {second} started.")
    expect(page.locator("#record-title")).to_have_text(f"Requalification {second} · {m['id']} · {SCOPE_LABEL}")
    add_criterion(page, "uts_mpa", "860", "MPa")
    page.locator("#save-criteria").press("Enter")
    expect(page.locator("#criteria-message")).to_have_text("1 criterion saved; lock them before entering results.")
    page.locator("#lock-criteria").press("Enter")
    expect(page.locator("#criteria-open")).to_be_hidden()
    enter_result(page, "TB-2", "905", x="230")
    expect(page.locator("#artefacts tr[data-artefact='TB-2'] td").last).to_have_text("PASS")
    expect(page.locator("#approval-readiness")).to_have_text(
        "Ready to sign: every criterion has its results and all passed.")
    expect(page.locator("#blockers li")).to_have_count(0)
    page.fill("#approve-supplier", "AP&C")
    page.fill("#approve-password", "not-my-password")
    tab_to(page, "#approve-form button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.locator("#approve-message")).to_have_text("Signature refused: the password is not correct")
    page.fill("#approve-password", PASSWORD)
    page.press("#approve-password", "Enter")
    expect(page.locator("#approval-line")).to_contain_text("Signed by Quentin Quality")  # then ask the API
    sig = plant.call("GET", "/audit/signatures", "quality_engineer",
                     params={"record_type": "requalification", "record_id": str(second)})
    assert len(sig) == 1 and sig[0]["meaning"] == "approved"
    expect(page.locator("#approval-line")).to_have_text(f"{sig_line(sig[0])}. The scope is qualified.")
    expect(page.locator("#approval-line")).to_be_focused()
    expect(row.locator("[data-scope-state]")).to_have_text("qualified")
    expect(page.locator("#approval-open")).to_be_hidden()
    screenshot(page, "qualification")
    after = plant.call("GET", f"/qualification/scopes/{scope['id']}", "quality_engineer")
    assert (after["state"], after["valid_until"], after["qualified_material_supplier"]) == (
        "qualified", VALID_UNTIL, "AP&C")


def test_design_iteration_approved_by_design_engineer_and_clinician(page, ui_server, plant):
    case = plant.case()
    design = plant.design(case["id"])
    it = plant.call("POST", f"/designs/{design['id']}/iterations", "design_engineer", 201,
                    data={"software_name": "Materialise Mimics", "software_version": "26.0",
                          "change_note": "wall thickened to 2.5 mm"},
                    files=[("files", ("cup.stl", b"solid cup\nendsolid\n", "model/stl")),
                           ("files", ("cup-build.3mf", b"PK build job 3mf", "model/3mf"))])
    card = page.locator(f"#awaiting #iteration-{it['id']}")

    login(page, ui_server.url, "/ui/approvals", "dana.designer")  # not a user: refused in words
    expect(page.locator("#login-message")).to_have_text("User id or password is not correct, or the account is locked for a while after repeated failures")
    page.fill("#username", "design.engineer")
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")
    expect(page.locator("#who")).to_have_text("Dana Designer (design engineer)")
    expect(card.locator(".approval-state")).to_have_text(
        "Waiting for the signature of: design engineer and clinician.")
    expect(card.locator(".software")).to_have_text("Materialise Mimics 26.0")
    expect(card.locator(".files tbody tr")).to_have_text(
        [f"cup.stl{f['sha256']}{f['size_bytes']} bytes" if f["file_name"] == "cup.stl" else
         f"cup-build.3mf{f['sha256']}{f['size_bytes']} bytes" for f in it["files"]])
    expect(card.locator(".no-signatures")).to_have_text("Not signed yet.")
    password = card.locator("input[type=password]")
    password.fill("wrong-password")
    password.press("Enter")
    expect(card.locator("form.sign .message")).to_have_text("Signature refused: the password is not correct")
    expect(password).to_be_focused()
    password.fill(PASSWORD)
    password.press("Enter")
    expect(card.locator(".approval-state")).to_have_text("Waiting for the signature of: clinician.")
    sigs = plant.call("GET", f"/designs/iterations/{it['id']}", "quality_engineer")["signatures"]
    expect(card.locator("[data-result]")).to_have_text(f"{sig_line(sigs[0])}.")
    expect(card.locator(".signatures .sig-line")).to_have_text([sig_line(sigs[0])])
    expect(card.locator("form.sign")).to_have_count(0)
    screenshot(page, "design-approval")

    log_out_and_in(page, "clinician")
    expect(page.locator("#who")).to_have_text("Dr. Clara Clinician (clinician)")
    expect(card.locator("form.sign h4")).to_have_text(f"Sign as clinician: approve iteration {it['number']}")
    card.locator("input[type=password]").fill(PASSWORD)
    card.locator("input[type=password]").press("Enter")
    done = page.locator(f"#approved #iteration-{it['id']}")
    expect(done.locator(".approval-state")).to_have_text("Approved: design engineer and clinician have both signed.")
    after = plant.call("GET", f"/designs/iterations/{it['id']}", "quality_engineer")
    assert after["status"] == "approved"
    assert [s["signer_role"] for s in after["signatures"]] == ["design_engineer", "clinician"]
    expect(done.locator(".signatures .sig-line")).to_have_text([sig_line(s) for s in after["signatures"]])
    expect(card).to_have_count(0)

    log_out_and_in(page, "quality.engineer")
    expect(page.locator("#approvals-role")).to_have_text(
        "You review here; the design engineer and the clinician sign. An iteration is approved when both have "
        "signed.")
    expect(done.locator(".signatures .sig-line")).to_have_count(2)
    expect(page.locator("form.sign")).to_have_count(0)


STEAM_134 = {"process": "steam", "sterilization_temp_c": 134.0, "min_hold_s": 180.0,
             "pressure_tolerance_kpa": 10.0, "min_f0_min": 15.0}


def test_recipe_version_approved_by_the_quality_engineer(page, ui_server, plant):
    v1 = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                    json={"name": "STEAM-134-UI", "parameters": STEAM_134})
    plant.call("POST", f"/cycles/recipes/{v1['id']}/approve", "quality_engineer", json={"password": PASSWORD})
    v2 = plant.call("POST", "/cycles/recipes", "quality_engineer", 201,
                    json={"name": "STEAM-134-UI", "parameters": {**STEAM_134, "min_hold_s": 240.0}})

    login(page, ui_server.url, "/ui/recipes", "quality.engineer")
    expect(page.locator("#recipes-message")).to_have_text("2 recipe versions; 1 waiting for approval.")
    draft = page.locator("[data-recipe='STEAM-134-UI v2']")
    expect(draft.locator("[data-state]")).to_have_text("draft")
    expect(draft.locator("[data-param='min_hold_s']")).to_have_text("240")
    expect(draft.locator("[data-param='sterilization_temp_c']")).to_have_text("134")
    expect(draft.locator("[data-param='band_plus_k']")).to_have_text("3")
    draft.locator("input[type=password]").fill(PASSWORD)
    draft.locator("input[type=password]").press("Enter")
    expect(draft.locator("[data-state]")).to_have_text("approved")
    sig = plant.call("GET", "/audit/signatures", "quality_engineer",
                     params={"record_type": "cycle_recipe", "record_id": str(v2["id"])})
    expect(draft.locator(".approval")).to_have_text(f"{sig_line(sig[0])}.")
    expect(draft.locator(".approval")).to_be_focused()
    expect(page.locator("[data-recipe='STEAM-134-UI v1'] [data-state]")).to_have_text("superseded")
    expect(page.locator("#recipes-message")).to_have_text("2 recipe versions; 0 waiting for approval.")
    screenshot(page, "recipes")


def png(width: int, height: int) -> bytes:
    """A real PNG image (grey, 8-bit) of the given size, as a camera app would upload one."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + bytes([(x * 5) % 256 for x in range(width)]) for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_nonconformity_photo_shown_on_the_dashboard_only_with_a_token(page, ui_server, plant):
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    photo = png(40, 30)
    nc = plant.call("POST", "/kiosk/nonconformities", "operator", 201,
                    data={"code": code, "kind": "surface", "description": "Spatter on the cup rim"},
                    files=[("photo", ("rim.png", photo, "image/png"))])
    url = f"/api/v1/nonconformities/{nc['id']}/photo"
    assert plant.client.get(url).status_code == 401
    refused = plant.client.get(url, headers=plant.h("operator"))
    assert refused.status_code == 403
    served = plant.client.get(url, headers=plant.h("quality_engineer"))
    assert served.content == photo and served.headers["content-type"] == "image/png"

    login(page, ui_server.url, "/ui/dashboard", "production.manager")
    button = page.locator(f"#ncs [data-photo='{nc['id']}']")
    expect(button).to_have_text("Show photo")
    button.press("Enter")
    img = page.locator("#ncs img.photo")
    expect(img).to_have_attribute("alt", f"Photo of nonconformity {nc['id']}: Spatter on the cup rim")
    page.wait_for_function("() => document.querySelector('#ncs img.photo').naturalWidth > 0")
    assert img.evaluate("i => [i.naturalWidth, i.naturalHeight, i.src.startsWith('blob:')]") == [40, 30, True]
    expect(page.locator("#ncs .nc-photo .hint")).to_have_text(
        f"SHA-256 {nc['photo_sha256']} (checked by the server)")
    reads = plant.call("GET", "/audit/entries", "quality_engineer",
                       params={"record_type": "nonconformity", "record_id": str(nc["id"])})
    assert [e["actor"] for e in reads if e["action"] == "nonconformity_photo_read"] == [
        "user:quality.engineer", "user:production.manager"]
