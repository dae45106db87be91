"""Prometheus metrics of the server: requests by route, and what the records say now, read at each scrape.

Request counts and latencies are this process's (each instance is scraped on its own). Gate decisions,
requalifications, scopes that need requalification and agents' last heartbeats are read from the database at
scrape time, so every instance reports the same plant-wide truth and a restart loses no count. Live-stream
clients and the database pool are per process. `/metrics` admits the scrape token (`AMTRACE_METRICS_TOKEN`,
compared in constant time) or an administrator's access token (server/auth/deps.py, scrape_or_admin)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from server.db import session_scope
from server.models import (Agent, AuditVerification, DeviceArchive, DeviceSeal, GateDecision, QualificationScope,
                           Requalification)

# Latency buckets for a request (seconds): the gate answers in milliseconds, a DHR PDF in seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """ASGI middleware counting requests and their latency by method, route template and status (a few µs each)."""

    def __init__(self, app, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("amtrace_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("amtrace_http_request_duration_seconds", "Time to answer an HTTP request",
                                 ["method", "route"], buckets=BUCKETS, registry=registry)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            # The endpoint's template as declared (/jobs/{job_id} under /api/v1; /healthz, /metrics at the root),
            # never the raw path: ids would make one series per record.
            path = getattr(route, "path", None) or ("/ui" if scope["path"].startswith("/ui") else "unmatched")
            method = scope["method"]
            self.requests.labels(method, path, str(status)).inc()
            self.latency.labels(method, path).observe(time.perf_counter() - start)


class RecordsCollector:
    """Plant-wide gauges read from the records at each scrape, and this process's streams and pool."""

    def __init__(self, maker: sessionmaker[Session], app) -> None:
        self.maker, self.app = maker, app

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The metric families, read now."""
        with session_scope(self.maker) as s:
            decisions = dict(s.execute(select(GateDecision.allowed, func.count()).group_by(GateDecision.allowed)).all())
            requal = dict(s.execute(select(Requalification.state, func.count())
                                    .group_by(Requalification.state)).all())
            scopes = dict(s.execute(select(QualificationScope.state, func.count())
                                    .group_by(QualificationScope.state)).all())
            agents = s.execute(select(Agent.name, Agent.last_seen_at).where(Agent.revoked_at.is_(None))).all()
            audit = s.scalars(select(AuditVerification).order_by(AuditVerification.id.desc()).limit(1)).first()
            unarchived = s.scalar(select(func.count()).select_from(DeviceSeal).where(
                ~select(DeviceArchive.id).where(DeviceArchive.device_id == DeviceSeal.device_id).exists()))
        c = CounterMetricFamily("amtrace_gate_decisions", "Release-gate decisions recorded, by outcome",
                                labels=["outcome"])
        c.add_metric(["allowed"], decisions.get(True, 0))
        c.add_metric(["refused"], decisions.get(False, 0))
        yield c
        g = GaugeMetricFamily("amtrace_requalifications_open", "Requalification records not yet approved or "
                                                               "rejected")
        g.add_metric([], sum(n for state, n in requal.items() if state in ("open", "criteria_locked")))
        yield g
        g = GaugeMetricFamily("amtrace_qualification_scopes", "Qualification scopes by state", labels=["state"])
        for state, n in sorted(scopes.items()):
            g.add_metric([state], n)
        yield g
        now = datetime.now(timezone.utc)
        g = GaugeMetricFamily("amtrace_agent_last_heartbeat_age_seconds", "Seconds since each active agent's last "
                              "heartbeat (absent: never heard from)", labels=["agent"])
        for name, seen in agents:
            if seen is not None:
                g.add_metric([name], (now - (seen if seen.tzinfo else seen.replace(tzinfo=timezone.utc))).total_seconds())
        yield g
        if audit is not None:  # absent until the first `audit verify`: no run is not a passed run
            g = GaugeMetricFamily("amtrace_audit_verify_ok", "1 when the last `amtrace-server audit verify` found the "
                                  "chain, signatures, sealed rows, files and anchors intact, 0 when it found a break")
            g.add_metric([], int(audit.ok))
            yield g
            g = GaugeMetricFamily("amtrace_audit_verify_problems", "Breaks found by the last audit verification")
            g.add_metric([], audit.problems)
            yield g
            g = GaugeMetricFamily("amtrace_audit_verify_last_run_timestamp_seconds", "When the last audit "
                                  "verification ran (Unix time)")
            at = audit.checked_at if audit.checked_at.tzinfo else audit.checked_at.replace(tzinfo=timezone.utc)
            g.add_metric([], at.timestamp())
            yield g
        g = GaugeMetricFamily("amtrace_device_archives_missing", "Released (sealed) devices whose archive is not "
                              "written (a failed archive step: the sweep retries; `amtrace-server dhr archive --pending`)")
        g.add_metric([], unarchived)
        yield g
        g = GaugeMetricFamily("amtrace_influx_retention_short", "1 when InfluxDB keeps points shorter than "
                              "AMTRACE_INFLUX_MIN_RETENTION_DAYS or its retention could not be read (see /readyz)")
        g.add_metric([], int(bool(getattr(self.app.state, "retention_warning", None))))
        yield g
        g = GaugeMetricFamily("amtrace_live_stream_clients", "Live-state streams open on this instance")
        g.add_metric([], self.app.state.live.subscribers())
        yield g
        pool = self.app.state.engine.pool
        checked_out = getattr(pool, "checkedout", None)
        if checked_out is not None:
            g = GaugeMetricFamily("amtrace_db_pool_connections_in_use", "Database connections checked out of this "
                                                                        "instance's pool")
            g.add_metric([], checked_out())
            yield g

