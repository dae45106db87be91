"""The HTML pages, served under /ui: page shells from Jinja2 templates plus static scripts and styles.

A page shell holds no records: each page logs the person in and then reads the JSON API with a bearer token,
so every piece of data passes the same role check as any other API call."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from server.auth.badge import kiosk_settings

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))

# Scripts and styles come only from this server (no inline script, no CDN): an injected <script> cannot run,
# and a page works on a plant network with no internet.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

# page key -> (template, title, roles that may use it, login kind)
PAGES = {
    "kiosk": ("kiosk.html", "Kiosk", ("operator",), "badge"),
    "dashboard": ("dashboard.html", "Production dashboard", ("production_manager", "quality_engineer", "admin"),
                  "password"),
    "quality": ("quality.html", "Quality", ("quality_engineer",), "password"),
    "audit": ("audit.html", "Audit trail", ("quality_engineer", "admin"), "password"),
    "approvals": ("approvals.html", "Design approval", ("design_engineer", "clinician", "quality_engineer"),
                  "password"),
    "qualification": ("qualification.html", "Qualification", ("quality_engineer",), "password"),
    "recipes": ("recipes.html", "Recipe approval", ("quality_engineer",), "password"),
    "delivery": ("delivery.html", "Delivery", ("production_manager", "clinician"), "password"),
    # A screen, not a person: the display token from its link (created on the dashboard), no log-in, no actions.
    "wall": ("wall.html", "Machines", ("wall_display",), "display"),
}


def pages_app() -> FastAPI:
    """The sub-application mounted at /ui (no OpenAPI: its routes are pages, not API)."""
    ui = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    ui.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @ui.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @ui.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        """The start page: which page for whom."""
        return templates.TemplateResponse(request, "index.html", {"title": "amtrace", "pages": PAGES,
                                                                  "page": "index"})

    @ui.get("/{page}", response_class=HTMLResponse)
    def page(request: Request, page: str) -> HTMLResponse:
        """A page shell; it asks for a login and then loads its data from the API."""
        if page not in PAGES:
            return RedirectResponse("/ui/", status_code=303)
        template, title, roles, login = PAGES[page]
        return templates.TemplateResponse(request, template, {
            "title": title, "page": page, "roles": " ".join(roles), "login": login,
            "idle_seconds": kiosk_settings().idle_seconds if login == "badge" else 900})

    return ui
