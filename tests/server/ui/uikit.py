"""Browser-test helpers: the real server under uvicorn on a free loopback port (SQLite file), screenshots at both
sizes, keyboard navigation. Importable by name (`from uikit import ...`); the fixtures are in conftest.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from server.db import migrate
from server.settings import Settings
from routekit import ROUTES_ENV, ROUTES_WITHOUT_CYCLES  # noqa: E402 - tests/server is on the path (conftest)

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "deploy" / "local"))
import localstack  # noqa: E402

# Tests write their screenshots under var/ (a test run never rewrites the documentation); `make screenshots`
# runs the page tests with AMTRACE_SCREENSHOTS=docs/screenshots to refresh the copies the docs show.
SCREENSHOTS = ROOT / os.environ.get("AMTRACE_SCREENSHOTS", "var/screenshots")
SIZES = ((1280, 800), (1920, 1080))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BADGES = {"operator": ("40017", "2468"), "operator2": ("40018", "1357")}


class UiServer:
    """The amtrace server running in its own process, as in production."""

    def __init__(self, folder: Path, env: dict[str, str] | None = None, database_url: str | None = None):
        self.db = database_url or f"sqlite:///{folder}/server.db"
        self.env = {**os.environ, **ROUTES_ENV, **(env or {}), "AMTRACE_DATABASE_URL": self.db, "AMTRACE_ARGON2_TIME_COST": "1",
                    "AMTRACE_ARGON2_MEMORY_KIB": "8", "AMTRACE_ARGON2_PARALLELISM": "1",
                    "AMTRACE_FILE_STORE": str(folder / "files"), "PYTHONPATH": str(ROOT)}
        self.settings = Settings(database_url=self.db, argon2_time_cost=1, argon2_memory_kib=8,
                                 argon2_parallelism=1, file_store=str(folder / "files"),
                                 routes=ROUTES_WITHOUT_CYCLES)
        self.log = folder / "server.log"
        self.port = localstack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "UiServer":
        """Migrate and start uvicorn; return when /healthz answers."""
        migrate(self.db)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "server.app:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning"], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT)
        localstack.wait_for_http(self.url + "/healthz", timeout=30, proc=self.proc)
        return self

    def stop(self) -> None:
        """Stop the server process."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def sse_events(response):
    """(name, data) of each server-sent event of an httpx streaming response, as they arrive."""
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: ") and name:
            yield name, json.loads(line[6:])
            name = None


def screenshot(page, name: str) -> list[Path]:
    """Write <SCREENSHOTS>/<name>-<w>x<h>.png at both sizes (var/screenshots unless refreshing the docs)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    original = page.viewport_size
    out = []
    for w, h in SIZES:
        page.set_viewport_size({"width": w, "height": h})
        path = SCREENSHOTS / f"{name}-{w}x{h}.png"
        page.screenshot(path=str(path))
        out.append(path)
    page.set_viewport_size(original)
    return out


def tab_to(page, selector: str, limit: int = 40) -> None:
    """Press Tab until the element matching selector has the focus (keyboard-only operation)."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} cannot be reached with the Tab key within {limit} presses")
