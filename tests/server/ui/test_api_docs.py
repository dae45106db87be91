"""The API's /docs page works offline: Chromium with every non-loopback request refused still shows the operations."""

from __future__ import annotations

from urllib.parse import urlparse

from playwright.sync_api import expect


def test_api_docs_render_with_no_network_beyond_this_server(page, ui_server):
    asked_elsewhere: list[str] = []

    def only_loopback(route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost", "::1"):
            route.continue_()
        else:
            asked_elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_loopback)
    page.goto(ui_server.url + "/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() > 50  # every operation of the API, from the server's own schema
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/gate/decisions").first).to_be_visible()
    assert asked_elsewhere == []
    # People who type the server's address land on the pages.
    page.goto(ui_server.url + "/")
    assert urlparse(page.url).path.startswith("/ui/")
