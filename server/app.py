"""The FastAPI application: routers under /api/v1, one error shape, health check."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import sys
from contextlib import asynccontextmanager, suppress
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy.exc
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi_offline import FastAPIOffline

from server.db import make_engine, make_sessionmaker
from server.errors import COMMON_ERRORS, DomainError, ErrorBody
from server.settings import Settings, get_settings

API = "/api/v1"


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for settings (read from the environment when not given)."""
    from server.agents.changes import ContextChanges
    from server.auth.ratelimit import FailedLogins
    from server.auth.deps import precheck_signature
    from server.notifications.service import NotificationWatch
    from server.agents.router import router as agents
    from server.audit.router import router as audit
    from server.cycles.router import router as cycles
    from server.history.router import router as history
    from server.auth.router import router as auth
    from server.delivery.router import router as delivery
    from server.samples.router import router as samples
    from server.retention.router import router as retention
    from server.designs.router import router as designs
    from server.gate.router import router as gate
    from server.jobs.router import router as jobs
    from server.machines.router import router as machines
    from server.materials.router import router as materials
    from server.nonconformities.router import router as nonconformities
    from server.notifications.router import router as notifications
    from server.qualification.router import router as qualification
    from server.stages.router import router as stages

    settings = settings or get_settings()
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from server.audit.watch import anchor_periodically
        from server.notifications.push import push_notifications
        from server.stages.watch import watch_overdue

        tasks = [asyncio.create_task(watch_overdue(app), name="overdue watch"),
                 asyncio.create_task(anchor_periodically(app), name="audit anchor")]
        if app.state.settings.notify_webhook_url:
            tasks.append(asyncio.create_task(push_notifications(app), name="notification push"))
        app.state.overdue_watch = tasks[0]
        tasks.append(asyncio.create_task(_check_retention(app), name="retention check"))
        if app.state.settings.archive_sweep_s > 0:
            tasks.append(asyncio.create_task(_archive_sweep(app), name="archive sweep"))
        if app.state.engine.dialect.name == "postgresql":  # commits of the other instances wake this one's waiters
            for watch in (app.state.context_changes, app.state.notification_watch):
                tasks.append(asyncio.create_task(watch.listen(app.state.settings.database_url),
                                                 name=f"listen {watch.channel}"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    # /docs and /redoc with their scripts from the fastapi-offline package, not a CDN: a shop-floor network is
    # often offline (FastAPI's own pages stayed blank there).
    app = FastAPIOffline(
        lifespan=lifespan,
        title="amtrace server",
        version="0.1.0",
        description="Decides what may be built where: qualification, designs, jobs, release gate, audit trail.",
        static_url="/docs-assets",
    )
    engine = make_engine(settings.database_url)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine, settings)
    app.state.context_changes = ContextChanges()
    app.state.context_changes.install(app.state.sessionmaker)
    app.state.failed_logins = FailedLogins(settings.login_rate_per_min)
    app.state.notification_watch = NotificationWatch()
    app.state.notification_watch.install(app.state.sessionmaker)
    app.state.gate_executor = ThreadPoolExecutor(max_workers=settings.gate_threads, thread_name_prefix="gate")
    app.state.gate_in_flight = 0

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status == 429:
            headers = {"Retry-After": str(exc.retry_after_s)}
        return JSONResponse(ErrorBody(code=exc.code, detail=exc.detail).model_dump(), status_code=exc.status,
                            headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # A body that is not JSON (or form data) at all: the same error body as every other refusal.
            return JSONResponse(ErrorBody(code="body_unreadable", detail=(
                f"The request body could not be read as {request.headers.get('content-type') or 'JSON'}: "
                f"{exc.detail}")).model_dump(), status_code=400)
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path (GET and POST of /agents are two
            # routes): a client, or a proxy, must learn every method the resource has (RFC 9110 §15.5.6).
            exc = StarletteHTTPException(405, exc.detail, headers={**(exc.headers or {}),
                                                                   "Allow": _allowed_methods(app, request.url.path)})
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # The default answer echoes the input, and a lone surrogate ("\udcff") in it made rendering the 422 fail
        # with a 500: escaped JSON (ensure_ascii) carries any input.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True, default=str)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(OverflowError)
    @app.exception_handler(sqlalchemy.exc.DataError)
    @app.exception_handler(sqlalchemy.exc.StatementError)
    async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # An id or count past 64 bits reaches the database (SQLite: OverflowError; PostgreSQL: numeric value out of
        # range) and was a 500: it is the request that is wrong.
        cause = getattr(exc, "orig", exc)
        if not isinstance(cause, (OverflowError, sqlalchemy.exc.DataError)) and not isinstance(
                exc, (OverflowError, sqlalchemy.exc.DataError)) and "out of range" not in str(cause):
            raise exc
        if any(str(v).isdigit() and int(v) > 2**63 - 1 for v in request.path_params.values()):
            # An id in the path that no record can have: there is no such record.
            return JSONResponse(ErrorBody(code="not_found", detail="No such record: ids fit in 64 bits (at most "
                                          "9223372036854775807)").model_dump(), status_code=404)
        return JSONResponse(ErrorBody(code="out_of_range", detail="A number in the request is out of range: ids "
                                      "and counts fit in 64 bits (at most 9223372036854775807)").model_dump(),
                            status_code=422)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (without authentication). Whether it can serve is /readyz."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "Not ready, with every reason"}})
    def readyz() -> JSONResponse:
        """Readiness: the database is reachable and at the code's schema (the keys were checked at start: production
        refuses to start without its own)."""
        from server.db import schema_problem

        # Open, like /healthz, for load balancers and orchestrators: it says what is wrong, not where (no hosts).
        problems = [p for p in (schema_problem(app.state.engine, detail=False),) if p]
        # Warnings do not stop serving: a short InfluxDB retention loses evidence later, not requests now.
        warnings = [w for w in (getattr(app.state, "retention_warning", None),) if w]
        return JSONResponse({"status": "not ready" if problems else "ready", "problems": problems,
                             "warnings": warnings, "environment": app.state.settings.environment},
                            status_code=503 if problems else 200)

    _add_metrics(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        """People who type the server's address land on the pages."""
        return RedirectResponse("/ui/", status_code=307)

    # The release gate first: routes are matched in order, and it is asked before every build.
    # Routers whose endpoints sign check the signer's password or PIN before the endpoint writes (auth.signing).
    signing = [Depends(precheck_signature)]
    for router in (gate, auth, audit, machines, qualification, materials, designs, jobs, stages, nonconformities,
                   agents, cycles, history, notifications, delivery, samples, retention):
        signs = router not in (gate, auth, agents, history, notifications)
        app.include_router(router, prefix=API, dependencies=signing if signs else None)
    _add_pages(app)
    return app


GIL_SWITCH_SECONDS = 0.001


def create_served_app() -> FastAPI:
    """The app as `amtrace-server serve` runs it: create_app(), startup objects frozen, a 1 ms GIL switch interval."""
    app = create_app()
    # Everything built so far (modules, routes, schemas, the engine) lives as long as the process. A full
    # (generation 2) collection walked all of it: ~100 ms with every request of the worker stalled, once
    # every half-minute or so under release-gate load (measured with gc.callbacks in the gate
    # benchmark). Frozen objects are skipped by every collection; what is garbage is collected first.
    gc.collect()
    gc.freeze()
    # A release-gate thread that got its answer from PostgreSQL waits for the GIL while the event loop
    # parses and answers other requests, up to the switch interval each time (5 ms by default), and it
    # makes several round trips per decision. 1 ms: p99 at 200 decisions/s 19 ms instead of 29 ms
    # (median of 7 runs each, docs/benchmarks.md); 0.5 ms was worse again (more switching than work).
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    return app


def _allowed_methods(app: FastAPI, path: str) -> str:
    """Every method the OpenAPI schema documents for the resource at path, for a 405's Allow header."""
    table = getattr(app.state, "allow_table", None)
    if table is None:
        table = app.state.allow_table = [
            (re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"), sorted(ops))
            for template, ops in app.openapi()["paths"].items()]
    methods = sorted({m.upper() for pattern, ops in table if pattern.match(path) for m in ops
                      if m in ("get", "put", "post", "delete", "patch", "head")})
    return ", ".join(methods)


async def _archive_sweep(app: FastAPI) -> None:
    """Archive sealed devices whose archive is missing (a release whose archive step failed), every
    AMTRACE_ARCHIVE_SWEEP_S; the first sweep one interval after start."""
    from server.archive.service import write_pending

    log = logging.getLogger("amtrace.archive")
    while True:
        await asyncio.sleep(app.state.settings.archive_sweep_s)
        try:
            done, failed = await asyncio.to_thread(write_pending, app.state.sessionmaker)
            if done:
                log.info("archived %d sealed device(s) whose archive was missing: %s", len(done), ", ".join(done))
        except Exception:  # the next sweep tries again; the DHR says "archive missing" meanwhile
            log.exception("archive sweep failed")


async def _check_retention(app: FastAPI, every_s: float = 3600.0) -> None:
    """Read InfluxDB's retention at start and hourly; a retention shorter than the horizon is logged and in /readyz."""
    import logging

    from server.timeseries.influx import InfluxQL
    from server.timeseries.retention import retention_warning

    settings = app.state.settings
    while True:
        def check() -> str | None:
            with InfluxQL.from_settings(settings) as influx:
                return retention_warning(influx, min_days=settings.influx_min_retention_days)
        try:
            warning = await asyncio.to_thread(check)
        except Exception as e:  # noqa: BLE001 - an odd answer must not end the check; it is said instead
            warning = f"InfluxDB retention not checked: {type(e).__name__}: {e}"
        if warning and warning != getattr(app.state, "retention_warning", None):
            logging.getLogger("server.timeseries").warning("%s", warning)
        app.state.retention_warning = warning
        await asyncio.sleep(every_s)


class RefuseBlankPaths:
    """ASGI: a path segment that is a number with blanks around it ("8 ") names no record, so it is a 404 before
    routing; otherwise lax integer parsing would read it as the id 8. Other segments (a device code someone typed
    with a quote and blanks) go on to their endpoint, which says what it did not find."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and any(seg != seg.strip() and seg.strip().lstrip("+-").isdigit()
                                           for seg in scope["path"].split("/")):
            response = JSONResponse(ErrorBody(code="not_found", detail="No such record: an id with blanks around "
                                              "it").model_dump(), status_code=404)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _add_metrics(app: FastAPI) -> None:
    """Prometheus: request counts and latencies (middleware) and the records' gauges, at /metrics."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    from server.auth.deps import scrape_or_admin
    from server.metrics import RecordsCollector, RequestMetrics

    registry = CollectorRegistry()
    app.add_middleware(RefuseBlankPaths)
    app.add_middleware(RequestMetrics, registry=registry)
    registry.register(RecordsCollector(app.state.sessionmaker, app))

    @app.get("/metrics", tags=["health"], response_class=Response, dependencies=[Depends(scrape_or_admin)],
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"},
                        **{k: v for k, v in COMMON_ERRORS.items() if k in (401, 403)}})
    def metrics() -> Response:
        """Prometheus metrics of this instance; the scrape token (AMTRACE_METRICS_TOKEN) or an administrator."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _add_pages(app: FastAPI) -> None:
    """Live machine state, the JSON the pages need, and the pages themselves (kiosk, dashboards) under /ui."""
    from server.auth.deps import precheck_signature
    from server.live.router import router as live
    from server.live.state import LiveFeed
    from server.ui.pages import pages_app
    from server.ui.router import router as ui

    app.state.live = LiveFeed(app.state.sessionmaker)
    app.include_router(live, prefix=API)
    # The kiosk signs with a PIN: checked before the endpoint writes, like every signature (auth.signing).
    app.include_router(ui, prefix=API, dependencies=[Depends(precheck_signature)])
    app.mount("/ui", pages_app())
