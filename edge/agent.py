"""The edge agent: loads the configuration, opens the outbox, starts the InfluxDB writer, the
connectors and the local HTTP endpoint, and stops them cleanly."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from pathlib import Path

from edge.assignments import AssignmentBook
from edge.config import AgentConfig, ConfigError, MachineConfig, load_machines
from edge.connectors.base import Connector
from edge.connectors.plugin import ConnectorContext
from edge.connectors.registry import connector_class
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.readings import OutboxFull
from edge.retag import Retagger
from edge.live import LiveState
from edge.parts import AgentParts
from edge.serverlink import ObservedSink, ServerLink
from edge.writer import InfluxWriter

log = logging.getLogger("amtrace.agent")
RETENTION_CHECK_S = 3600.0  # how often the retention of the InfluxDB database or bucket is read again


def api_token_path(cfg: AgentConfig) -> Path:
    """Where the local API token lives (readable by the agent's user only)."""
    return Path(cfg.state_dir) / "api-token"


def api_port_path(cfg: AgentConfig) -> Path:
    """Where the running agent notes the port its local API listens on."""
    return Path(cfg.state_dir) / "api-port"


def ensure_api_token(cfg: AgentConfig) -> str:
    """Return the local API token, creating it (mode 0600) on first start."""
    path = api_token_path(cfg)
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class EdgeAgent:
    """One agent process: connectors → pipeline → outbox → writer → InfluxDB."""

    def __init__(self, cfg: AgentConfig, machines: list[MachineConfig] | None = None,
                 *, config_dir: Path | None = None):
        self.cfg = cfg
        base = config_dir or Path.cwd()
        machines_dir = Path(cfg.machines_dir)
        if not machines_dir.is_absolute():
            machines_dir = base / machines_dir
        self.machines = machines if machines is not None else load_machines(machines_dir, cfg.machines)
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.started_ns = time.time_ns()
        self.outbox = Outbox(Path(cfg.outbox.path) if cfg.outbox.path else self.state_dir / "outbox.sqlite",
                             budget_bytes=cfg.outbox.budget_bytes, fsync=cfg.outbox.fsync)
        self.assignments = AssignmentBook(self.state_dir / "assignments.sqlite")
        self.pipeline = Pipeline(self.machines, self.outbox, self.assignments)
        self.writer = InfluxWriter(cfg.influx, self.outbox, on_event=self.pipeline.event, journal=self.pipeline)
        # Readings written before the agent knew the load (a cycle recorded late) get its device codes.
        self.retagger = Retagger(self.state_dir / "retag.sqlite", cfg.influx, self.outbox, self.pipeline.event)
        self.connectors: dict[str, Connector] = {}
        self.live = LiveState(self.machines)
        self.parts = AgentParts(agent_id=cfg.id, machines=self.machines, state_dir=self.state_dir, outbox=self.outbox,
                                assignments=self.assignments, pipeline=self.pipeline, writer=self.writer,
                                retagger=self.retagger, live=self.live, connectors=self.connectors)
        self.server_link: ServerLink | None = None
        if cfg.server is not None:
            token = os.environ.get(cfg.server.token_env)
            if not token:
                raise ConfigError(f"server: the agent token must be in the environment variable "
                                  f"{cfg.server.token_env} (tokens never sit in configuration files)")
            self.server_link = ServerLink(self.parts, url=cfg.server.url, token=token, interval_s=cfg.server.interval_s)
        self.sink = ObservedSink(self.pipeline, self.live, self.server_link)
        self.api_token = ensure_api_token(cfg)
        self.http = None
        self._stop = asyncio.Event()

    def build_connector(self, machine: MachineConfig) -> Connector:
        """Instantiate the registered connector for a machine."""
        context = ConnectorContext(agent_id=self.cfg.id, state_dir=self.state_dir,
                                   group_commit_ms=self.cfg.outbox.group_commit_ms)
        return connector_class(machine.connection.type).from_context(machine, self.sink, context)

    async def start(self) -> None:
        """Start writer, connectors and HTTP endpoint; returns once they run."""
        from edge.http_api import LocalApi

        self._store_signal_map()
        self.writer.start()
        self.retagger.start()
        for m in self.machines:
            conn = self.build_connector(m)
            self.connectors[m.id] = conn
            await conn.start()
        from edge.buildfiles import BuildFileGuard, LocalApprovals

        # With a server, it is the source of approvals; the local file is for running without one. The guard
        # makes the watched folders: before the local API answers, so a healthy agent has them.
        approvals = self.server_link or (LocalApprovals(self.cfg.approvals_file) if self.cfg.approvals_file else None)
        self.build_file_guard = BuildFileGuard(self.parts, self.sink, approvals, server_link=self.server_link)
        if self.server_link is not None:
            self.server_link.on_clearance_change = self.build_file_guard.reconcile
        self.http = LocalApi(self.parts, api_token=self.api_token, status=self.status, host=self.cfg.http.host,
                             port=self.cfg.http.port, server_managed=self.server_link is not None,
                             record_event=self.sink.event)
        self.http.start()
        # The port it really listens on (http.port 0 picks a free one): `amtrace-edge status` and friends read it.
        api_port_path(self.cfg).write_text(f"{self.http.port}\n")
        self._link_task = asyncio.create_task(self.server_link.run()) if self.server_link else None
        self._retention_task = asyncio.create_task(self._check_retention())
        self._guard_task = (asyncio.create_task(self.build_file_guard.run())
                            if self.build_file_guard.machines else None)
        log.info("agent %s running: %d machines, local API on http://%s:%d, InfluxDB %s (%s)",
                 self.cfg.id, len(self.machines), self.cfg.http.host, self.http.port,
                 self.cfg.influx.url, self.cfg.influx.api)

    async def _check_retention(self) -> None:
        """At start and hourly: does InfluxDB keep what this agent writes long enough? (a warning, not a stop)"""
        from edge.writer.retention import retention_warning

        last: str | None = None
        while True:
            warning = await asyncio.to_thread(retention_warning, self.cfg.influx)
            self.writer.note_retention(warning)
            if warning and warning != last:
                log.warning("%s", warning)
            last = warning
            await asyncio.sleep(RETENTION_CHECK_S)

    def _store_signal_map(self) -> None:
        lines = self.pipeline.signal_map_lines(self.started_ns)
        try:
            self.outbox.put([("\n".join(lines), len(lines))])
        except OutboxFull:
            log.error("outbox full at start: signal map not stored yet; it is written at the next start")

    async def stop(self, flush_timeout_s: float = 5.0) -> None:
        """Stop connectors first (nothing new comes in), then give the writer a moment to drain."""
        for task in (getattr(self, "_guard_task", None), getattr(self, "_link_task", None),
                     getattr(self, "_retention_task", None)):
            if task:
                task.cancel()
        for conn in self.connectors.values():
            try:
                await conn.stop()
            except Exception:  # noqa: BLE001 - stopping must go on for the others
                log.exception("stopping connector %s", conn.machine.id)
        self.retagger.stop()
        await asyncio.to_thread(self.writer.flush, flush_timeout_s)
        self.writer.stop()
        if self.http:
            self.http.stop()
        if self.server_link:
            await self.server_link.close()
        self.assignments.close()
        self.outbox.close()

    def request_stop(self) -> None:
        """Ask run() to stop (signal handlers call this)."""
        self._stop.set()

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stop.wait()
        log.info("agent %s stopping", self.cfg.id)
        await self.stop()

    def status(self) -> dict:
        """Everything `amtrace-edge status` and GET /status show."""
        ob = self.outbox.stats()
        ps = self.pipeline.stats
        ws = self.writer.stats
        return {
            "agent": self.cfg.id,
            "started_ns": self.started_ns,
            "readings_in": ps.readings_in,
            "field_values_stored": ps.field_values,
            "lines_stored": ps.lines,
            "excursions": ps.excursions,
            "events": ps.events,
            "quarantined": self.outbox.quarantine_count(),
            "backpressure_refusals": ps.backpressure_refusals,
            # Lasting problems (a link down, the outbox full, back-pressure) with their true start, also when it
            # was before a restart of the agent: open until their end is recorded.
            "open_conditions": {key: {"since_ns": ns, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))}
                                for key, ns in sorted(self.pipeline.conditions().items())},
            "outbox": {"rows": ob.rows, "lines": ob.lines, "used_bytes": ob.used_bytes,
                       "file_bytes": ob.file_bytes, "budget_bytes": ob.budget_bytes, "full": ob.full},
            "influx": {"url": self.cfg.influx.url, "api": self.cfg.influx.api,
                       **{k: getattr(ws, k) for k in vars(ws) if not k.startswith("_")}},
            "connections": {
                mid: {"type": c.type, "connected": c.state.connected, "intake_problem": c.state.intake_problem,
                      "since_ns": c.state.since_ns,
                      "last_error": c.state.last_error, "reconnects": c.state.reconnects,
                      **({"stats": {k: v for k, v in vars(c.stats).items() if not k.startswith("_")}}
                         if hasattr(c, "stats") and hasattr(c.stats, "__dict__") else {})}
                for mid, c in self.connectors.items()
            },
            "build_file_checks": [vars(o) for o in getattr(getattr(self, "build_file_guard", None), "outcomes", [])[-20:]],
            "live": {mid: vars(live) for mid, live in self.live.machines.items()},
            "server": (None if self.server_link is None else {
                "url": self.server_link.url, "connected": self.server_link.connected,
                "last_error": self.server_link.last_error, "reports_waiting": self.server_link.queue.count(),
                "not_owned": sorted(self.server_link.not_owned),
                "clearance": {m.id: vars(self.server_link.clearance(m.id)) for m in self.machines}}),
            "assignments": {m.id: (a.as_dict() if (a := self.assignments.current(m.id)) else None)
                            for m in self.machines},
            "retag": self.retagger.status(),
        }
