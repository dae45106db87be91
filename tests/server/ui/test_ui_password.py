"""The person's own password in Chromium (issue 16, 21 CFR 11.300): a password an administrator set is replaced at
the first login before the page opens, and logging out ends the session on the server too."""

from __future__ import annotations

from playwright.sync_api import expect

from test_ui_workflows import login
from uikit import screenshot


def test_a_password_set_by_the_administrator_is_replaced_at_first_login(page, ui_server, plant):
    u = plant.call("POST", "/users", "admin", 201, json={"username": "quinn.new", "full_name": "Quinn New",
                                                         "role": "quality_engineer", "password": "set-by-admin-9"})
    login(page, ui_server.url, "/ui/recipes", "quinn.new", "set-by-admin-9")
    expect(page.locator("#password-card")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#pw-cancel")).to_be_hidden()
    screenshot(page, "password-first-login")
    page.fill("#pw-current", "set-by-admin-9")
    page.fill("#pw-new", "quinns-own-words")
    page.fill("#pw-repeat", "quinns-own-word")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#password-message")).to_have_text("The two new passwords differ.")
    page.fill("#pw-current", "set-by-admin-9")
    page.fill("#pw-new", "quinns-own-words")
    page.fill("#pw-repeat", "quinns-own-words")
    page.click("#password-form button[type=submit]")
    expect(page.locator("#app")).to_be_visible()
    users = {x["username"]: x for x in plant.call("GET", "/users", "admin")}
    assert users["quinn.new"]["must_change_password"] is False and users["quinn.new"]["id"] == u["id"]
    token = page.evaluate("JSON.parse(sessionStorage.getItem(Object.keys(sessionStorage)[0])).token")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    # The page sends the logout without waiting for it (leaving must work with the server down): give it 5 s.
    for _ in range(50):
        r = plant.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        if r.status_code == 401:
            break
        page.wait_for_timeout(100)
    assert r.status_code == 401, "logging out ended the session on the server, not only in the tab"
