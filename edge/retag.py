"""Re-tagging: readings written before the agent knew which load was on the machine get its device codes.

A cycle recorded late (its start typed in after the fact), or learned a poll after it began, leaves readings in
InfluxDB with only the machine tag. The server's verdict no longer depends on tags (it reads by machine and
time), but a device's history is read by device code. So when the agent learns that job J with devices D ran on
machine M over [start, end], it asks for that stretch to be re-tagged: once the outbox has delivered everything
stored up to that moment, the stretch is read back from InfluxDB (InfluxQL, GROUP BY *), and every point that
carries no device tag is written again through the outbox under each device of D (same time, same fields with
their stored types: one more series, idempotent if repeated). The untagged copies stay: readings by machine
merge per time, and nothing accepted is ever deleted. Requests are kept in SQLite, so a restart resumes them.

InfluxQL reads need InfluxDB's v1 API: with `influx.api: v2` the request fails with a `retag_unavailable`
alarm event instead of pretending."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from edge.config import InfluxConfig
from edge.lineprotocol import render_line
from edge.outbox import Outbox, OutboxFull
from edge.pipeline import SIGNAL_MAP_MEASUREMENT
from edge.readings import Event

log = logging.getLogger("amtrace.retag")
SETTLE_S = 2.0  # readings of the stretch still on their way from a connector to the outbox
BATCH_LINES = 5000


@dataclass(frozen=True)
class RetagRequest:
    """Tag machine's untagged readings in [start_ns, end_ns] with job and devices."""

    id: int
    machine: str
    job: str
    devices: tuple[str, ...]
    start_ns: int
    end_ns: int
    mark: int
    created: float
    state: str
    detail: str


class Retagger:
    """Durable queue of re-tag requests and the thread that carries them out."""

    def __init__(self, path: str | Path, influx: InfluxConfig, outbox: Outbox, on_event: Callable[[Event], None]):
        self.influx, self.outbox, self.on_event = influx, outbox, on_event
        self._lock = threading.Lock()
        self._db = sqlite3.connect(Path(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS retag (id INTEGER PRIMARY KEY, machine TEXT NOT NULL, job TEXT NOT NULL,"
            " devices TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, mark INTEGER NOT NULL,"
            " created REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending', detail TEXT NOT NULL DEFAULT '',"
            " UNIQUE (machine, job, start_ns, end_ns))")
        # Every context look names the recent cycles again: known ones are skipped here, without a write.
        self._known = set(self._db.execute("SELECT machine, job, start_ns, end_ns FROM retag"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    # --- the queue ------------------------------------------------------------------------

    def request(self, machine: str, job: str, devices: list[str] | tuple[str, ...], start_ns: int,
                end_ns: int) -> bool:
        """Queue a stretch once (the same machine, job and stretch again is ignored); True if new."""
        key = (machine, job, start_ns, end_ns)
        if end_ns <= start_ns or not devices or key in self._known:
            return False
        with self._lock:
            self._known.add(key)
            cur = self._db.execute(
                "INSERT OR IGNORE INTO retag (machine, job, devices, start_ns, end_ns, mark, created)"
                " VALUES (?,?,?,?,?,?,?)",
                (machine, job, json.dumps(list(devices)), start_ns, end_ns, self.outbox.last_id(), time.time()))
            new = cur.rowcount == 1
        if new:
            log.info("machine %s: readings %d..%d to be tagged with job %s (%s)", machine, start_ns, end_ns, job,
                     ", ".join(devices))
        return new

    def requests(self, state: str | None = None) -> list[RetagRequest]:
        """Requests, oldest first (optionally in one state)."""
        q = "SELECT id, machine, job, devices, start_ns, end_ns, mark, created, state, detail FROM retag"
        args: tuple = ()
        if state:
            q, args = q + " WHERE state = ?", (state,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY id", args).fetchall()
        return [RetagRequest(r[0], r[1], r[2], tuple(json.loads(r[3])), *r[4:]) for r in rows]

    def status(self) -> dict:
        """Counts per state, for the agent's status."""
        with self._lock:
            return dict(self._db.execute("SELECT state, count(*) FROM retag GROUP BY state").fetchall())

    def _finish(self, req: RetagRequest, state: str, detail: str) -> None:
        with self._lock:
            self._db.execute("UPDATE retag SET state = ?, detail = ? WHERE id = ?", (state, detail, req.id))

    # --- doing it -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Carry out every pending request whose stretch the outbox has delivered; return how many were done."""
        done = 0
        for req in self.requests("pending"):
            if time.time() - req.created < SETTLE_S or not self.outbox.delivered_through(req.mark):
                continue
            try:
                n = self._retag(req)
            except OutboxFull:
                return done  # the writer is behind: try again later, nothing lost
            except (httpx.HTTPError, ValueError, KeyError) as e:
                log.warning("machine %s: re-tag of job %s not done yet: %s", req.machine, req.job, e)
                continue
            done += 1
            if n is None:
                continue
            self._finish(req, "done", f"{n} readings written again under {len(req.devices)} device(s)")
            self.on_event(Event(req.machine, "retag",
                                f"{n} readings of {req.machine} written before the agent knew of job {req.job} "
                                f"now carry its device codes ({', '.join(req.devices)})",
                                time.time_ns(), "info", {"job": req.job, "readings": n, "start_ns": req.start_ns,
                                                         "end_ns": req.end_ns}))
        return done

    def _retag(self, req: RetagRequest) -> int | None:
        if self.influx.api != "v1":
            msg = (f"readings of {req.machine} written before the agent knew of job {req.job} cannot be re-tagged: "
                   f"re-tagging reads back through InfluxQL (influx.api v1); their device tags stay missing")
            self._finish(req, "failed", msg)
            self.on_event(Event(req.machine, "retag_unavailable", msg, time.time_ns(), "alarm",
                                {"job": req.job, "start_ns": req.start_ns, "end_ns": req.end_ns}))
            return None
        machine = req.machine.replace("\\", "\\\\").replace("'", "\\'")
        series = self._query(f"SELECT * FROM /.*/ WHERE \"machine\" = '{machine}' AND time >= {req.start_ns} "
                             f"AND time <= {req.end_ns} GROUP BY *")
        types: dict[str, dict[str, str]] = {}
        lines: list[str] = []
        for s in series:
            measurement, tags = s["name"], {k: v for k, v in (s.get("tags") or {}).items() if v}
            if measurement == SIGNAL_MAP_MEASUREMENT or tags.get("device"):
                continue  # the catalogue is per machine; tagged points already belong to a load
            if measurement not in types:
                types[measurement] = {k: t for k, t in self._query_rows(
                    f'SHOW FIELD KEYS FROM "{_ident(measurement)}"')}
            cols = s["columns"]
            for row in s["values"]:
                fields = {c: _typed(v, types[measurement].get(c)) for c, v in zip(cols[1:], row[1:]) if v is not None}
                if not fields:
                    continue
                for device in req.devices:
                    lines.append(render_line(measurement, {**tags, "job": req.job, "device": device}, fields, row[0]))
        for i in range(0, len(lines), BATCH_LINES):
            part = lines[i:i + BATCH_LINES]
            self.outbox.put([("\n".join(part), len(part))])
        return len(lines) // max(1, len(req.devices))

    def _http(self) -> httpx.Client:
        if self._client is None:
            auth = None
            if self.influx.username:
                auth = httpx.BasicAuth(self.influx.username, os.environ.get(self.influx.password_env or "", ""))
            self._client = httpx.Client(base_url=self.influx.url.rstrip("/"), timeout=self.influx.timeout_s,
                                        auth=auth)
        return self._client

    def _query(self, q: str) -> list[dict]:
        params = {"db": self.influx.database, "q": q, "epoch": "ns"}
        if self.influx.retention_policy:
            params["rp"] = self.influx.retention_policy
        resp = self._http().get("/query", params=params)
        resp.raise_for_status()
        results = resp.json().get("results", [])
        errors = [r["error"] for r in results if r.get("error")]
        if errors:
            raise ValueError(f"InfluxDB: {errors[0]}")
        return [s for r in results for s in r.get("series", [])]

    def _query_rows(self, q: str) -> list[list]:
        return [row for s in self._query(q) for row in s["values"]]

    # --- thread ---------------------------------------------------------------------------

    def start(self, interval_s: float = 1.0) -> None:
        """Carry out requests in a background thread every interval_s."""
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.run_once()
                except Exception:  # noqa: BLE001 - a bad request must not end re-tagging for the others
                    log.exception("re-tagging failed")
        self._thread = threading.Thread(target=loop, name="retag", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the database."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._client:
            self._client.close()
        self._db.close()


def _ident(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def _typed(value, kind: str | None):
    """A value read back as JSON, in the field type InfluxDB stored (so the rewrite cannot conflict)."""
    if kind == "float":
        return float(value)
    if kind == "integer":
        return int(value)
    return value
