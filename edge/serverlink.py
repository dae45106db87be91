"""The agent's link to the central server: the server decides, the edge enforces.

- Heartbeat with each machine's live state (connection, job, layer, alerts) every few seconds.
- Job context: which job and device codes are on each machine now, and the approved build files;
  the server is the source of assignments and approvals once it is configured.
- Reports: machine identity (a changed software revision triggers requalification on the
  server), build-file check results, alarm excursions. Reports wait in a small durable queue
  (SQLite) until the server took them, so a server outage loses none.
- Clearance: a machine may start only while its job is released by the server's release gate and
  the server did not answer an identity report with an unqualified scope."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Sequence

import httpx

from pydantic import ValidationError

from edge.assignments import Assignment, AssignmentBook, AssignmentRequest
from edge.contract import (AgentContext, BuildFileCheckIn, CycleWindow, ExcursionIn, HeartbeatIn, HeartbeatOut,
                           IdentityIn, IdentityOut, JobApprovals, LocalOverrideIn, ScopeBrief)
from edge.live import LiveState
from edge.readings import Event, Ingest

if TYPE_CHECKING:
    from edge.parts import LinkParts

log = logging.getLogger("amtrace.serverlink")

API = "/api/v1"
# Machine states (as machines name them, lower-cased) that mean "not working on a job right now".
IDLE_STATES = {"idle", "ready", "standby", "end", "completed", "complete", "done", "aborted", "stopped", "off", ""}
IDENTITY_FIELDS = ("manufacturer", "model", "serial_number", "software_revision", "hardware_revision")
REQUIRED_IDENTITY = ("manufacturer", "serial_number")
# How long the server may hold a context request open (long poll) before answering "unchanged".
LONG_POLL_S = 25.0


class ReportQueue:
    """Reports for the server, durable until the server confirmed them (oldest first)."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS report (id INTEGER PRIMARY KEY, kind TEXT NOT NULL,"
                         " machine_id TEXT NOT NULL, body TEXT NOT NULL, created_ns INTEGER NOT NULL,"
                         " attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT)")

    def put(self, kind: str, machine_id: str, body: dict) -> None:
        """Queue one report durably."""
        with self._lock:
            self._db.execute("INSERT INTO report (kind, machine_id, body, created_ns) VALUES (?,?,?,?)",
                             (kind, machine_id, json.dumps(body), time.time_ns()))

    def pending(self, limit: int = 50) -> list[tuple[int, str, str, dict]]:
        """Oldest reports not yet confirmed."""
        with self._lock:
            rows = self._db.execute("SELECT id, kind, machine_id, body FROM report ORDER BY id LIMIT ?",
                                    (limit,)).fetchall()
        return [(i, k, m, json.loads(b)) for i, k, m, b in rows]

    def done(self, report_id: int) -> None:
        """The server took it (or refused it for good): remove it."""
        with self._lock:
            self._db.execute("DELETE FROM report WHERE id=?", (report_id,))

    def failed(self, report_id: int, error: str) -> None:
        """Count a failed attempt; the report stays."""
        with self._lock:
            self._db.execute("UPDATE report SET attempts=attempts+1, last_error=? WHERE id=?", (error[:500], report_id))

    def count(self) -> int:
        """Reports waiting."""
        with self._lock:
            return self._db.execute("SELECT count(*) FROM report").fetchone()[0]

    def close(self) -> None:
        """Close the database."""
        self._db.close()


@dataclass
class Clearance:
    """Whether the server lets a machine start, and why not."""

    allowed: bool
    reasons: list[str] = field(default_factory=list)


OVERRIDE_PREFIX = "local_override:"  # agent state: local overrides whose end the server has not been told yet
TRENDS_EVERY_S = 15.0  # the sparklines' minute buckets change slowly: sent with every few heartbeats only
SERVER_LINK = "server_link"  # the condition key of an outage of the link to the server
OWNERSHIP_PREFIX = "not_owned:"  # condition keys of configured machines the server gives to another agent


class ObservedSink:
    """The ReadingSink connectors get: the pipeline, plus live state and server reports on the side."""

    def __init__(self, pipeline, live: LiveState, link: "ServerLink | None"):
        self.pipeline = pipeline
        self.live = live
        self.link = link

    def submit(self, ingests: Sequence[Ingest], *, state: Mapping[str, str | None] | None = None) -> None:
        """Store durably (pipeline), then note live values."""
        for event in self.pipeline.submit(ingests, state=state):
            self._observed(event)  # limit excursions: an alert on the dashboard, an alarm reported to the server
        self.live.observe(ingests)

    def saved_state(self, prefix: str) -> dict[str, str]:
        """Connector state kept by the pipeline."""
        return self.pipeline.saved_state(prefix)

    def save_state(self, state: Mapping[str, str | None]) -> None:
        """Store connector state through the pipeline."""
        self.pipeline.save_state(state)

    def open_condition(self, key: str, event: Event) -> bool:
        """Open a lasting condition durably; when it is new, also an alert and a report like any event."""
        if not self.pipeline.open_condition(key, event):
            return False
        self._observed(event)
        return True

    def close_condition(self, key: str, make_event: Callable[[int], Event]) -> int | None:
        """Close a lasting condition durably; its closing event is also an alert and a report."""
        made: list[Event] = []
        since = self.pipeline.close_condition(key, lambda ns: made.append(make_event(ns)) or made[-1])
        for event in made:
            self._observed(event)
        return since

    def _observed(self, event: Event) -> None:
        self.live.alert(event)
        if self.link is not None:
            self.link.on_event(event)

    def quarantine(self, **kw) -> None:
        """Quarantine through the pipeline."""
        self.pipeline.quarantine(**kw)

    def event(self, event: Event) -> None:
        """Record the event, keep it as an alert, and tell the server what it must know."""
        self.pipeline.event(event)
        self._observed(event)


class ServerLink:
    """Heartbeat, job context and reports between one agent and the server."""

    def __init__(self, parts: "LinkParts", *, url: str, token: str, interval_s: float = 2.0):
        self.parts = parts
        self.url = url.rstrip("/")
        self.interval_s = interval_s
        self._trends_sent = float("-inf")
        self._trend_buckets = 0
        self.client = httpx.AsyncClient(base_url=self.url + API, timeout=5.0,
                                        headers={"Authorization": f"Bearer {token}"})
        self.queue = ReportQueue(parts.state_dir / "server-reports.sqlite")
        self.contexts: dict[str, AgentContext] = {}
        self.scope_problems: dict[str, list[str]] = {}
        self.not_owned: set[str] = set()  # configured here, but the server holds another agent (or none) responsible
        self.connected = False
        self.last_error: str | None = None
        self._down_since: int | None = None
        self._wake = asyncio.Event()
        self.long_poll_s = LONG_POLL_S
        self.delivery = DeliveryMarks(parts.outbox)
        # The build-file guard re-applies a machine's start interlock when its clearance changes (set by the agent).
        self.on_clearance_change: Callable[[str], Awaitable[None]] | None = None

    # -- what others ask ---------------------------------------------------------------------
    def lookup(self, machine_id: str, job_id: str) -> JobApprovals | None:
        """Approved files of the job on the machine, from the last context the server sent."""
        ctx = self.contexts.get(machine_id)
        if ctx is None or ctx.job_id != job_id:
            return None
        return ctx.approvals

    def clearance(self, machine_id: str) -> Clearance:
        """Whether the server lets the machine start now."""
        reasons = list(self.scope_problems.get(machine_id, []))
        ctx = self.contexts.get(machine_id)
        if ctx is None:
            reasons.append("the server has not been reached yet: start stays blocked")
        elif ctx.job_id is None:
            reasons.append("the server has no open job on this machine")
        elif ctx.job_state != "released":
            reasons.append(f"job {ctx.job_id} is not released by the release gate (state {ctx.job_state})")
        for nc in ctx.open_nonconformities if ctx is not None else []:
            reasons.append(f"open nonconformity {nc.id} ({nc.kind.replace('_', ' ')}) must be dispositioned first")
        if ctx is not None and ctx.job_id is not None:
            reasons.extend(ctx.blocking_reasons)
        return Clearance(not reasons, reasons)

    def on_event(self, event: Event) -> None:
        """Queue what the server must know about an event (called from any thread)."""
        if event.kind in ("identity", "identity_changed"):
            conn = self.parts.connectors.get(event.machine_id)
            ident = dict(getattr(conn, "identity", {}) or {})
            # Manufacturer and serial number identify the machine (mandatory in OPC 40001-1); the rest is
            # optional there, so a machine without e.g. HardwareRevision still reports its software revision.
            if all(ident.get(f) for f in REQUIRED_IDENTITY):
                try:
                    body = IdentityIn(**{f: ident.get(f) or None for f in IDENTITY_FIELDS})
                except ValidationError as e:
                    # Refused here as the server would refuse it (a field too long): said once, not retried.
                    self.parts.pipeline.event(Event(event.machine_id, "server_refused_report",
                                                    f"the machine's identity cannot be reported: {e.errors()[0]['msg']} "
                                                    f"({'.'.join(map(str, e.errors()[0]['loc']))})",
                                                    time.time_ns(), "alarm", {}))
                    return
                self.queue.put("identity", event.machine_id, body.model_dump(mode="json"))
        elif event.kind == "local_override":
            f = event.fields
            self.queue.put("local_override", event.machine_id, LocalOverrideIn(
                job=str(f["job"]), device_codes=[d for d in str(f.get("devices", "")).split(",") if d],
                reason=str(f["reason"]), start_ns=int(f["start_ns"])).model_dump(mode="json"))
            # Its end is reported once the local assignment ends (_report_override_ends), even after a restart.
            self.parts.pipeline.save_state({OVERRIDE_PREFIX + f"{event.machine_id}:{int(f['start_ns'])}": "open"})
        elif event.kind == "excursion" and event.severity == "alarm":
            f = event.fields
            a = self.parts.assignments.active_at(event.machine_id, event.ts_ns)
            self.queue.put("excursion", event.machine_id, ExcursionIn(
                job_id=_server_job_id(a.job if a else None), signal=str(f.get("signal")),
                value=float(f.get("value", 0.0)), limit=float(f.get("limit", 0.0)), unit=str(f.get("unit", "")),
                description=event.message[:2000], device_codes=list(a.devices) if a else []).model_dump(mode="json"))
        else:
            return
        self._poke()

    def report_build_file_check(self, machine_id: str, job: str | None, file_name: str, sha256: str | None,
                                passed: bool, detail: str) -> None:
        """Queue a build-file check result for the server (a failed one opens a nonconformity there)."""
        if sha256 is None:
            return
        self.queue.put("build_file_check", machine_id, BuildFileCheckIn(
            job_id=_server_job_id(job), file_name=file_name, sha256=sha256, passed=passed,
            detail=detail[:2000]).model_dump(mode="json"))
        self._poke()

    def _poke(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(self._wake.set)

    # -- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Talk to the server until cancelled; never raises for an unreachable server."""
        self._loop = asyncio.get_running_loop()
        watchers = [asyncio.create_task(self._watch_context(m.id), name=f"context {m.id}")
                    for m in self.parts.machines]
        try:
            while True:
                try:
                    self._report_override_ends()
                    await self._send_reports()
                    await self._heartbeat()
                    self._up()
                except (httpx.HTTPError, ServerRefused) as e:
                    self._down(e)
                except Exception as e:  # noqa: BLE001 - the link must keep going
                    log.exception("server link")
                    self._down(e)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.interval_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    async def _watch_context(self, machine_id: str) -> None:
        """Keep one machine's context by long poll: the server answers as soon as it changes."""
        etag: str | None = None
        while True:
            try:
                params = {"wait_s": self.long_poll_s, "known": etag} if etag else {}
                r = await self._call("GET", f"/agents/machines/{machine_id}/context", params=params,
                                     timeout=self.long_poll_s + 10)
                if r.status_code >= 400:
                    log.error("server refused the context of %s: %s %s", machine_id, r.status_code, r.text[:300])
                    await asyncio.sleep(self.interval_s)
                    continue
                try:
                    ctx = AgentContext.model_validate_json(r.content)
                except ValidationError as e:
                    # A server of another version, or a broken proxy: not a context to act on; the start stays
                    # as it is and the link says why.
                    raise ServerRefused(f"the context of {machine_id} is not what this agent reads: "
                                        f"{e.errors()[0]['msg']} at {'.'.join(map(str, e.errors()[0]['loc']))}")
                self._apply_context(machine_id, ctx)
                etag = r.headers.get("ETag")
                if etag is None:
                    # A server without the long poll: ask again after the interval, as a poll.
                    await asyncio.sleep(self.interval_s)
            except (httpx.HTTPError, ServerRefused) as e:
                self._down(e)
                etag = None
                await asyncio.sleep(self.interval_s)
            except Exception as e:  # noqa: BLE001 - the link must keep going
                log.exception("context of %s", machine_id)
                self._down(e)
                etag = None
                await asyncio.sleep(self.interval_s)

    def _up(self) -> None:
        if not self.connected:
            now = time.time_ns()
            # A lasting condition: an outage that began before a restart of the agent ends here too, with its
            # true start.
            self.parts.pipeline.close_condition(SERVER_LINK, lambda since: Event(
                "", "server_restored", f"server {self.url} reachable again after {(now - since) / 1e9:.1f} s", now,
                "info", {"down_since_ns": since, "down_s": round((now - since) / 1e9, 3)}))
            self.connected, self._down_since, self.last_error = True, None, None

    def _down(self, e: Exception) -> None:
        self.last_error = f"{type(e).__name__}: {e}"
        if self.connected or self._down_since is None:
            self._down_since = time.time_ns()
            self.parts.pipeline.open_condition(SERVER_LINK, Event(
                "", "server_unreachable", f"server {self.url}: {self.last_error}", self._down_since, "warning", {}))
            log.warning("server %s not reachable: %s", self.url, self.last_error)
        self.connected = False

    async def _call(self, method: str, path: str, **kw) -> Any:
        r = await self.client.request(method, path, **kw)
        if r.status_code >= 500 or r.status_code in (401, 429):
            raise ServerRefused(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r

    async def _send_reports(self) -> None:
        paths = {"identity": "/agents/machines/{m}/identity", "build_file_check": "/agents/machines/{m}/build-file-checks",
                 "excursion": "/agents/machines/{m}/excursions",
                 "local_override": "/agents/machines/{m}/local-overrides"}
        for report_id, kind, machine_id, body in self.queue.pending():
            r = await self._call("POST", paths[kind].format(m=machine_id), json=body)
            if r.status_code >= 400:
                # 4xx: the server will never take this report (e.g. identity serial mismatch, 409);
                # it is recorded on the server side and here, and must not block the ones behind it.
                log.error("server refused %s report for %s: %s %s", kind, machine_id, r.status_code, r.text[:500])
                self.parts.pipeline.event(Event(machine_id, "server_refused_report",
                                                f"server refused the {kind} report: {r.text[:300]}",
                                                time.time_ns(), "alarm", {"status": r.status_code}))
                self.queue.done(report_id)
                continue
            self.queue.done(report_id)
            if kind == "identity":
                try:
                    self._note_scopes(machine_id, IdentityOut.model_validate_json(r.content).scopes)
                except ValidationError as e:
                    log.error("the server's answer to the identity of %s is not what this agent reads: %s",
                              machine_id, e)

    def _note_scopes(self, machine_id: str, scopes: list[ScopeBrief]) -> None:
        problems = [f"scope {s.id}: {s.state}" + (f" ({s.state_reason})" if s.state_reason else "")
                    for s in scopes if s.state != "qualified"]
        if problems != self.scope_problems.get(machine_id):
            self.scope_problems[machine_id] = problems
            self._reconcile(machine_id)

    def _report_override_ends(self) -> None:
        """Queue the end of each reported local override whose assignment has ended (the DHR names the interval)."""
        for key in self.parts.pipeline.saved_state(OVERRIDE_PREFIX):
            machine_id, _, start = key[len(OVERRIDE_PREFIX):].rpartition(":")
            a = self.parts.assignments.active_at(machine_id, int(start))
            if a is None or a.start_ns != int(start):
                self.parts.pipeline.save_state({key: None})  # not in the book (state from another install)
                continue
            if a.end_ns is None:
                continue
            self.queue.put("local_override", machine_id, LocalOverrideIn(
                job=a.job, device_codes=list(a.devices), reason="(end of the override)", start_ns=a.start_ns,
                end_ns=a.end_ns).model_dump(mode="json"))
            self.parts.pipeline.save_state({key: None})

    async def _heartbeat(self) -> None:
        now = time.monotonic()
        # Every TRENDS_EVERY_S, and at once when a trend gained a minute (a new point on the sparkline).
        buckets = sum(len(t.buckets) for live in self.parts.live.machines.values() for t in live.trends.values())
        with_trends = now - self._trends_sent >= TRENDS_EVERY_S or buckets != self._trend_buckets
        if with_trends:
            self._trends_sent, self._trend_buckets = now, buckets
        status = {"machines": self.live_status(with_trends=with_trends), "outbox_lines": self.parts.outbox.stats().lines,
                  "reports_waiting": self.queue.count(), "delivered_until_ns": self.delivery.until()}
        r = await self._call("POST", "/agents/heartbeat",
                             json=HeartbeatIn(agent_version="amtrace-edge 0.1", status=status).model_dump(mode="json"))
        if r.status_code == 200:
            self._note_ownership(HeartbeatOut.model_validate_json(r.content).machine_ids)

    def _note_ownership(self, owned: list[str] | None) -> None:
        """A configured machine the server gives to another agent (or to none) is an alarm until that changes:
        its reports are refused, so its start cannot be enabled and its nonconformities would not reach the server."""
        if owned is None:
            return
        now = time.time_ns()
        for m in self.parts.machines:
            key = OWNERSHIP_PREFIX + m.id
            if m.id not in owned:
                self.not_owned.add(m.id)
                if self.parts.pipeline.open_condition(key, Event(
                        m.id, "machine_not_owned", f"the server does not assign machine {m.id} to this agent: its "
                        "reports are refused; fix `machines:` in the agent file, or revoke the agent that owns it "
                        "on the server to hand it over", now, "alarm", {})):
                    log.error("server: machine %s is not this agent's (fix `machines:` or hand it over)", m.id)
            else:
                self.not_owned.discard(m.id)
                self.parts.pipeline.close_condition(key, lambda since, m=m: Event(
                    m.id, "machine_owned", f"the server assigns machine {m.id} to this agent again", now, "info",
                    {"since_ns": since}))

    def live_status(self, *, with_trends: bool = True) -> dict:
        """Each machine's live state in the shape the server's dashboard reads; the trends (a few kB per machine,
        changing once a minute) only when with_trends, the server keeping the last ones it got."""
        out = {}
        now = time.time_ns()
        for m in self.parts.machines:
            conn = self.parts.connectors.get(m.id)
            live = self.parts.live.machines[m.id]
            a = self.parts.assignments.current(m.id)
            connected = bool(conn and conn.state.connected)
            state = live.machine_state.lower() if live.machine_state else None
            if not connected:
                shown = "offline"
            elif state is None:
                shown = "unknown"
            elif state in IDLE_STATES:
                shown = "idle"
            else:
                # Only a printer builds; a furnace heats or holds, a washer washes: the machine's own word is the
                # phase, the state says whether it is working at all.
                shown = "building" if m.kind.endswith("_printer") else "active"
            out[m.id] = {"connected": connected, "state": shown, "phase": live.machine_state, "kind": m.kind,
                         "job": a.job if a else None, "layer": live.layer, "layers_total": live.layers_total,
                         "software_revision": (getattr(conn, "identity", {}) or {}).get("software_revision"),
                         "machine_state": live.machine_state,
                         "alerts": self.parts.live.alerts_of(m.id, now),
                         "last_data_ns": (now if connected and getattr(conn, "reports_changes_only", False)
                                          else live.last_data_ns), "updated_ns": live.updated_ns or now}
            if with_trends:
                out[m.id]["trends"] = self.parts.live.trends_of(m.id, now)
        return out

    def _apply_context(self, machine_id: str, ctx: AgentContext) -> None:
        """Turn a context from the server into assignments, re-tag requests and, when it changed, the interlock."""
        before = self.contexts.get(machine_id)
        self.contexts[machine_id] = ctx
        if "scopes" in ctx.model_fields_set:
            # The scopes' states by push: a requalification lets the start go without waiting for the next
            # identity report (before, the start stayed blocked until the machine reconnected).
            self._note_scopes(machine_id, ctx.scopes)
        booked_at = time.time_ns()
        booked = apply_server_job(self.parts.assignments, machine_id, ctx)
        stretches = retag_stretches(self.parts.assignments, machine_id, ctx.recent_cycles)
        if booked is not None and booked.start_ns < booked_at:
            # Booked from its recorded start: what the agent stored since then went out without these tags.
            stretches.append((booked.job, list(booked.devices), booked.start_ns, booked_at))
        for job, devices, start, end in stretches:
            self.parts.retagger.request(machine_id, job, devices, start, end)
        if before is None or self.clearance_key(before) != self.clearance_key(ctx):
            self._reconcile(machine_id)

    @staticmethod
    def clearance_key(ctx: AgentContext) -> tuple:
        """What in a context decides the clearance (a change re-applies the interlock)."""
        return (ctx.job_id, ctx.job_state, tuple(n.id for n in ctx.open_nonconformities), tuple(ctx.blocking_reasons))

    def _reconcile(self, machine_id: str) -> None:
        if self.on_clearance_change is not None:
            asyncio.get_running_loop().create_task(self.on_clearance_change(machine_id))

    async def close(self) -> None:
        """Close the HTTP client and the queue."""
        await self.client.aclose()
        self.queue.close()


class DeliveryMarks:
    """Up to when everything the agent received is stored in InfluxDB, for the server's cycle verdicts.

    At each call the outbox's newest row id is noted with the time; the newest noted time whose id the outbox
    has delivered is the answer (everything received before it is stored)."""

    def __init__(self, outbox):
        self.outbox = outbox
        self._marks: deque[tuple[int, int]] = deque()
        self._until = 0

    def until(self) -> int:
        """Unix ns up to which every reading received is stored (0 until the first backlog clears)."""
        self._marks.append((time.time_ns(), self.outbox.last_id()))
        while self._marks and self.outbox.delivered_through(self._marks[0][1]):
            self._until = self._marks.popleft()[0]
        return self._until


class ServerRefused(RuntimeError):
    """The server answered with an error that means 'try again later'."""


def _server_job_id(job: str | None) -> int | None:
    """Server job ids are integers; a local job id that is not one is not sent."""
    return int(job) if job is not None and job.isdigit() else None


def apply_server_job(book: AssignmentBook, machine_id: str, ctx: AgentContext) -> Assignment | None:
    """Put the job or cycle the server says runs on the machine into the assignment book, once; the new entry."""
    current = book.current(machine_id)
    job, devices = ctx.job_id, ctx.device_codes
    if job and devices:
        if current is None or current.job != job or list(current.devices) != devices:
            # From the job's own start when the server says it (a cycle that began before this poll),
            # but never inside the latest assignment, running or ended: the timeline is append-only, and
            # a row slipped in before an ended job would never become current (it was appended again
            # on every poll).
            start = book.earliest_start(machine_id, ctx.started_ns)
            booked = book.assign(machine_id, AssignmentRequest(job=job, devices=devices, source="server",
                                                               start_ns=start))
            log.info("machine %s: job %s from the server with devices %s", machine_id, job, ", ".join(devices))
            return booked
    elif current is not None and current.source == "server":
        # At the recorded end when the server has it (a cycle's end as typed in), not when we noticed:
        # readings that arrive late, or out of order, are then answered for the right time.
        ended = next((w.end_ns for w in ctx.recent_cycles if w.job_id == current.job and w.end_ns), None)
        book.release(machine_id, max(ended, current.start_ns + 1) if ended else None)
        log.info("machine %s: job %s closed on the server", machine_id, current.job)
    return None


def retag_stretches(book: AssignmentBook, machine_id: str,
                    windows: list[CycleWindow]) -> list[tuple[str, list[str], int, int]]:
    """(job, devices, start, end) of each recorded cycle that began and ended without the agent booking it
    (recorded afterwards, or between two looks at the server): its readings went out without its tags."""
    booked = {a.job for a in book.history(machine_id)}
    return [(w.job_id, list(w.device_codes), w.start_ns, w.end_ns) for w in windows
            if w.job_id not in booked and w.end_ns is not None]
