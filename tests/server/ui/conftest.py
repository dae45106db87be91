"""Browser-test fixtures: the real server under uvicorn on a free loopback port (SQLite file), Debian's Chromium
driven by Playwright (one browser per session), and the parent conftest's `plant` pointed at the real server.
The helpers they use live in uikit.py, which test modules import by that name."""

from __future__ import annotations


import httpx
import pytest

from server.app import create_app

from uikit import BADGES, CHROMIUM, CHROMIUM_ARGS, UiServer


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    """One real server per test module."""
    server = UiServer(tmp_path_factory.mktemp("ui-server")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app(ui_server):
    """An app object on the server's database: `plant` seeds people through its sessionmaker (not served)."""
    application = create_app(ui_server.settings)
    yield application
    application.state.engine.dispose()


@pytest.fixture(scope="module")
def client(ui_server):
    """HTTP client of the real server (replaces the parent conftest's in-process TestClient)."""
    with httpx.Client(base_url=ui_server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def badges(plant):
    """Badge numbers and PINs for the seeded operators, set by the admin through the API."""
    for key, (number, pin) in BADGES.items():
        plant.call("PUT", f"/users/{plant.uid(key)}/badge", "admin", json={"badge_number": number, "pin": pin})
    return BADGES


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, one per test session (Playwright's own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (empty sessionStorage) at the smaller kiosk size."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    context.close()
