"""The agent's local HTTP endpoint (loopback only): health, Prometheus metrics, status,
quarantine and the local job assignment.

/healthz and /metrics are open (aggregate counts only, for supervisors and Prometheus);
everything else needs the local API token from <state_dir>/api-token (Bearer)."""

from __future__ import annotations

import base64
import hmac
import json
import time
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import ValidationError

from edge.assignments import AssignmentRequest
from edge.readings import Event

if TYPE_CHECKING:
    from edge.parts import ApiParts

log = logging.getLogger("amtrace.http")
MAX_BODY = 64 * 1024


class AgentCollector:
    """Prometheus view of the agent's counters, read at scrape time."""

    def __init__(self, parts: "ApiParts"):
        self.parts = parts

    def collect(self):
        """Yield the metric families."""
        a = self.parts
        ps, ob, ws = a.pipeline.stats, a.outbox.stats(), a.writer.stats

        def counter(name, doc, value):
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            return c

        def gauge(name, doc, value):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            return g

        r = CounterMetricFamily("amtrace_readings_in", "Readings received from machines", labels=["machine"])
        for machine, n in sorted(ps.per_machine_readings.items()):
            r.add_metric([machine], n)
        yield r
        yield counter("amtrace_field_values_stored", "Field values stored in the outbox", ps.field_values)
        yield counter("amtrace_points_written", "Lines confirmed written by InfluxDB",
                      getattr(ws, "lines_written", 0))
        yield counter("amtrace_write_retries", "InfluxDB write retries", getattr(ws, "retries", 0))
        yield counter("amtrace_excursions", "Limit excursion events", ps.excursions)
        yield counter("amtrace_backpressure_refusals", "Ingests refused because the outbox was full",
                      ps.backpressure_refusals)
        yield gauge("amtrace_quarantined", "Inputs held in quarantine", a.outbox.quarantine_count())
        yield gauge("amtrace_outbox_rows", "Rows waiting in the outbox", ob.rows)
        yield gauge("amtrace_outbox_lines", "Lines waiting in the outbox", ob.lines)
        yield gauge("amtrace_outbox_bytes", "Bytes the outbox uses on disk", ob.used_bytes)
        yield gauge("amtrace_outbox_budget_bytes", "Disk budget of the outbox", ob.budget_bytes)
        yield gauge("amtrace_outbox_full", "1 while the outbox is at its budget (back-pressure)", int(ob.full))
        yield gauge("amtrace_influx_retention_short", "1 when InfluxDB keeps what this agent writes shorter than "
                    "influx.min_retention_days, or its retention could not be read (see /healthz warnings)",
                    int(bool(getattr(ws, "retention_warning", None))))
        yield gauge("amtrace_influx_connected", "1 while InfluxDB accepts writes", int(bool(getattr(ws, "connected", False))))
        c = GaugeMetricFamily("amtrace_connection_up", "1 while the machine connection is up",
                              labels=["machine", "type"])
        for mid, conn in a.connectors.items():
            c.add_metric([mid, conn.type], int(conn.state.connected))
        yield c


class LocalApi:
    """ThreadingHTTPServer on loopback serving the agent's local API."""

    def __init__(self, parts: "ApiParts", *, api_token: str, status: Callable[[], dict], host: str, port: int,
                 server_managed: bool = False, record_event: Callable[[Event], None] | None = None):
        self.parts = parts
        # The agent's observed sink: the event is stored, shown as a live alert and reported to the server.
        self.record_event = record_event or parts.pipeline.event
        # With a server, it gives each machine its jobs and device codes: a local assignment would tag the data
        # under codes it did not give (issue 13: for 1.5 s the data went under the wrong device).
        self.server_managed = server_managed
        self.api_token = api_token
        self.status = status
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(parts))
        api = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "amtrace-edge"

            def log_message(self, fmt, *args):  # route access logs through logging at debug
                log.debug("%s " + fmt, self.client_address[0], *args)

            def do_GET(self):
                api.handle(self, "GET")

            def do_PUT(self):
                api.handle(self, "PUT")

            def do_DELETE(self):
                api.handle(self, "DELETE")

            def do_POST(self):
                api.handle(self, "POST")

        bind = "127.0.0.1" if host == "localhost" else host
        server_cls = ThreadingHTTPServer
        if ":" in bind:
            import socket

            class V6(ThreadingHTTPServer):
                address_family = socket.AF_INET6
            server_cls = V6
        self.server = server_cls((bind, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="local-api", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()

    # -- request handling ------------------------------------------------------------------
    def _send(self, h: BaseHTTPRequestHandler, status: int, body, content_type="application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, indent=1, default=str).encode()
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _authorised(self, h: BaseHTTPRequestHandler) -> bool:
        got = h.headers.get("Authorization", "")
        want = f"Bearer {self.api_token}"
        return hmac.compare_digest(got.encode(), want.encode())

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        """Route one request."""
        path = h.path.split("?", 1)[0].rstrip("/") or "/"
        query = h.path.split("?", 1)[1] if "?" in h.path else ""
        try:
            if method == "GET" and path == "/healthz":
                st = self.status()
                healthy = (all(c["connected"] and not c["intake_problem"] for c in st["connections"].values())
                           and not st["outbox"]["full"] and not st["open_conditions"])
                # A short retention is a warning, not ill health: the agent takes in and stores everything.
                warnings = [w for w in (st["influx"].get("retention_warning"),) if w]
                return self._send(h, 200, {"status": "ok" if healthy else "degraded",
                                           "outbox_full": st["outbox"]["full"],
                                           "influx_connected": st["influx"].get("connected"),
                                           "open_conditions": st["open_conditions"], "warnings": warnings})
            if method == "GET" and path == "/metrics":
                return self._send(h, 200, generate_latest(self.registry), "text/plain; version=0.0.4")
            if not self._authorised(h):
                return self._send(h, 401, {"error": "missing or wrong local API token (see <state_dir>/api-token)"})
            if method == "GET" and path == "/status":
                return self._send(h, 200, self.status())
            if method == "GET" and path == "/assignments":
                return self._send(h, 200, [a.as_dict() for a in self.parts.assignments.history()])
            if method == "GET" and path == "/quarantine":
                params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
                limit = min(int(params.get("limit", 100)), 1000)
                entries = self.parts.outbox.quarantine_entries(limit=limit, offset=int(params.get("offset", 0)))
                return self._send(h, 200, [_entry_json(e) for e in entries])
            m = re.fullmatch(r"/machines/([a-z0-9][a-z0-9\-_]*)/assignment", path)
            if m:
                machine = m.group(1)
                if machine not in self.parts.pipeline.machines:
                    return self._send(h, 404, {"error": f"machine {machine} is not configured on this agent"})
                if method == "GET":
                    a = self.parts.assignments.current(machine)
                    return self._send(h, 200, a.as_dict() if a else None)
                if method == "PUT":
                    length = int(h.headers.get("Content-Length") or 0)
                    if length > MAX_BODY:
                        return self._send(h, 413, {"error": f"body of {length} bytes exceeds {MAX_BODY}"})
                    try:
                        req = AssignmentRequest.model_validate_json(h.rfile.read(length))
                        if self.server_managed and req.source != "server":
                            if not (req.force and req.reason and len(req.reason.strip()) >= 10):
                                return self._send(h, 409, {"error": (
                                    f"machine {machine} takes its jobs and device codes from the server: a local "
                                    f"assignment would tag its data under codes the server did not give. To override, "
                                    f"repeat with --force and --reason (at least 10 characters); the override is "
                                    f"recorded as an event under the devices")})
                        a = self.parts.assignments.assign(machine, req)
                    except ValidationError as e:
                        return self._send(h, 422, {"error": "invalid assignment", "details": json.loads(e.json())})
                    except ValueError as e:
                        return self._send(h, 409, {"error": str(e)})
                    log.info("machine %s: job %s assigned with devices %s", machine, a.job, ", ".join(a.devices))
                    if self.server_managed and req.source != "server":
                        # Recorded under the devices it tags (the DHR lists it among the build's events).
                        # Through the observed sink: a dashboard alert, and a report to the server, which records a
                        # nonconformity candidate for each device it tagged.
                        self.record_event(Event(
                            machine, "local_override", f"local assignment of job {a.job} (devices "
                            f"{', '.join(a.devices)}) overrides the server's job context: {req.reason.strip()}",
                            max(a.start_ns, time.time_ns()), "warning",
                            {"job": a.job, "devices": ",".join(a.devices), "reason": req.reason.strip(),
                             "start_ns": a.start_ns}))
                    return self._send(h, 200, a.as_dict())
                if method == "DELETE":
                    a = self.parts.assignments.release(machine)
                    if a:
                        log.info("machine %s: job %s released", machine, a.job)
                    return self._send(h, 200, a.as_dict() if a else None)
            return self._send(h, 404, {"error": f"no such endpoint: {method} {path}"})
        except Exception as e:  # noqa: BLE001 - the agent keeps running whatever a request does
            log.exception("local API %s %s failed", method, path)
            return self._send(h, 500, {"error": f"{type(e).__name__}: {e}"})


def _entry_json(e) -> dict:
    raw = bytes(e.raw)
    try:
        text = raw.decode("utf-8")
        raw_field = {"raw_text": text[:4096]}
    except UnicodeDecodeError:
        raw_field = {"raw_base64": base64.b64encode(raw[:4096]).decode()}
    return {"id": e.id, "time_ns": e.time_ns, "source": e.source, "origin": e.origin,
            "machine_id": e.machine_id, "reason": e.reason, "size": e.size, **raw_field}
