"""The InfluxDB writer: ships outbox rows in batches, deletes them only once InfluxDB confirmed.

Policy (see docs/outbox-and-writer.md):
- a batch is up to cfg.batch_lines lines, sent (gzip) through the configured transport (v1 or v2);
- Retryable (connection error, timeout, 5xx, 429, setup errors): keep the batch, wait with
  exponential backoff and jitter up to cfg.max_backoff_s, or exactly as long as Retry-After says;
- WriteRejected (400/422): bisect down to the lines the server refuses, quarantine each with the
  server's message, write the rest, then delete the rows;
- TooLarge (413): split in halves until the parts fit; a single line that is still too large is
  quarantined with the server's message;
- one connection_lost event at the first failure, one connection_restored event at the next
  success, never one per retry.
Lines carry their own nanosecond timestamps, so sending a batch again lands on the same points.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from typing import Callable

from edge.config import InfluxConfig
from edge.outbox import Outbox, OutboxRow, QuarantineFull
from edge.readings import Event, MemoryJournal
from edge.writer.errors import Retryable, TooLarge, WriteRejected

log = logging.getLogger("amtrace.writer")

_FIRST_BACKOFF_S = 0.1
_MAX_RETRY_AFTER_S = 3600.0  # a server asking for more than an hour is misconfigured; retry hourly
_IDLE_POLL_S = 0.2  # how often an idle writer checks for stop() while waiting for rows


@dataclasses.dataclass
class WriterStats:
    """Counters of the writer; a copy is returned by InfluxWriter.stats."""

    lines_written: int = 0  # lines InfluxDB confirmed (each line is one point)
    batches: int = 0  # outbox batches fully done (written, bad lines quarantined, rows deleted)
    requests: int = 0  # HTTP write requests, including bisection and split requests
    retries: int = 0  # failed attempts that were (or will be) retried
    bisections: int = 0  # halvings because of a 400/422
    splits: int = 0  # halvings because of a 413
    quarantined_lines: int = 0  # lines InfluxDB refused, kept in the quarantine
    connected: bool | None = None  # None until the first attempt
    last_error: str | None = None
    last_success_ns: int | None = None
    down_since_ns: int | None = None
    last_retry_delay_s: float | None = None
    retention_warning: str | None = None  # set by the agent's hourly check (edge/writer/retention.py)


def _machine_of(line: str) -> str | None:
    """The machine tag of a line, for the quarantine entry (machine ids never need escaping)."""
    head = line.split(" ", 1)[0]
    i = head.find(",machine=")
    if i < 0:
        return None
    return head[i + 9:].split(",", 1)[0] or None


def make_transport(cfg: InfluxConfig):
    """The transport for cfg.api: V1Transport (/write) or V2Transport (influxdb-client)."""
    if cfg.api == "v2":
        from edge.writer.v2 import V2Transport

        return V2Transport(cfg)
    from edge.writer.v1 import V1Transport

    return V1Transport(cfg)


class InfluxWriter:
    """Background thread moving outbox rows to InfluxDB; deletes only what InfluxDB confirmed."""

    def __init__(
        self,
        cfg: InfluxConfig,
        outbox: Outbox,
        *,
        on_event: Callable[[Event], None],
        quarantine: Callable[..., int] | None = None,
        transport=None,
        journal=None,
    ):
        """journal: where the InfluxDB outage is kept as a lasting condition (the pipeline: its start survives a
        restart of the agent); without one, in memory through on_event."""
        self.cfg = cfg
        self.outbox = outbox
        self.on_event = on_event
        self.journal = journal if journal is not None else _EventJournal(on_event)
        self._quarantine = quarantine if quarantine is not None else outbox.add_quarantine
        self.transport = transport if transport is not None else make_transport(cfg)
        self.target = self.transport.target
        self._stats = WriterStats()
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._attempt = 0
        self._quarantine_alarm = False
        self._link_key = f"influx_link:{self.target}"
        # An outage that began before a restart is still the same outage: open until the first write succeeds.
        self._maybe_open = True
        since = self.journal.conditions().get(self._link_key)
        if since is not None:
            self._stats.down_since_ns, self._stats.connected = since, False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (returns at once; a server that is down is retried)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="influx-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the request in flight; rows not yet confirmed stay in the outbox."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("InfluxDB writer did not stop within %.1f s (a request is still in flight)", timeout)
                return
            self._thread = None
        self.transport.close()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (everything confirmed); False if timeout passed first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.outbox.stats().rows == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    @property
    def stats(self) -> WriterStats:
        """A consistent copy of the counters."""
        with self._stats_lock:
            return dataclasses.replace(self._stats)

    def note_retention(self, warning: str | None) -> None:
        """The outcome of the latest retention check of what this writer writes to."""
        with self._stats_lock:
            self._stats.retention_warning = warning

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        prepared = False
        batch: list[OutboxRow] = []
        while not self._stop.is_set():
            try:
                if not prepared:
                    self.transport.prepare()
                    prepared = True
                if not batch:
                    batch = self.outbox.take(self.cfg.batch_lines)
                    if not batch:
                        self.outbox.wait_for_rows(_IDLE_POLL_S)
                        continue
                self._ship(batch)
                batch = []
            except Retryable as e:
                self._failed(e)
                self._wait(self._delay(e.retry_after_s))
            except QuarantineFull as e:
                # Bad lines cannot be set aside: keep the whole batch (nothing is lost), alarm once,
                # and try again later; the outbox fills and back-pressure reaches the machines.
                self._note_error(f"quarantine full: {e}")
                if not self._quarantine_alarm:
                    self._quarantine_alarm = True
                    self._emit(Event(
                        "", "quarantine_full", f"InfluxDB refused lines but the quarantine is full: {e}",
                        time.time_ns(), "alarm", {"target": self.target},
                    ))
                self._wait(self.cfg.max_backoff_s)
            except Exception as e:  # noqa: BLE001 - a bug or a disk error must not end shipping
                log.exception("InfluxDB writer: unexpected error; retrying")
                self._note_error(f"{type(e).__name__}: {e}")
                self._wait(self._delay(None))

    def _ship(self, rows: list[OutboxRow]) -> None:
        body = "\n".join(r.data for r in rows)
        lines_total = sum(r.lines for r in rows)
        bad: list[tuple[str, str]] = []
        try:
            self._send(body)
        except (WriteRejected, TooLarge) as e:
            self._resolve(body.split("\n"), e, bad)
        # Only now is every line either confirmed by InfluxDB or refused by it with a reason.
        for line, reason in bad:
            self._quarantine(source="influxdb", origin=self.target, raw=line.encode("utf-8"), reason=reason,
                             machine_id=_machine_of(line))
            log.warning("InfluxDB refused a line, quarantined: %s", reason)
        if self._quarantine_alarm and bad:
            self._quarantine_alarm = False
        self.outbox.delete([r.id for r in rows])
        with self._stats_lock:
            self._stats.batches += 1
            self._stats.lines_written += lines_total - len(bad)
            self._stats.quarantined_lines += len(bad)

    def _send(self, body: str) -> None:
        with self._stats_lock:
            self._stats.requests += 1
        self.transport.send(body)
        self._succeeded()

    def _resolve(self, lines: list[str], err: WriteRejected | TooLarge, bad: list[tuple[str, str]]) -> None:
        """Find the lines the server refuses by halving; the halves it accepts are written on the way."""
        if len(lines) == 1:
            what = "rejected" if isinstance(err, WriteRejected) else "too large"
            bad.append((lines[0], f"InfluxDB {what} (HTTP {err.status}): {err.message}"))
            return
        with self._stats_lock:
            if isinstance(err, WriteRejected):
                self._stats.bisections += 1
            else:
                self._stats.splits += 1
        mid = len(lines) // 2
        for half in (lines[:mid], lines[mid:]):
            try:
                self._send("\n".join(half))
            except (WriteRejected, TooLarge) as e:
                self._resolve(half, e, bad)

    # -- connection state and events ----------------------------------------------------------

    def _succeeded(self) -> None:
        now = time.time_ns()
        self._attempt = 0
        with self._stats_lock:
            self._stats.connected = True
            self._stats.last_success_ns = now
            self._stats.down_since_ns = None
        if not self._maybe_open:
            return

        def restored(down_since: int) -> Event:
            down_s = (now - down_since) / 1e9
            log.warning("InfluxDB %s reachable again after %.1f s", self.target, down_s)
            return Event("", "connection_restored", f"InfluxDB {self.target} accepts writes again after {down_s:.1f} s",
                         now, "info", {"target": self.target, "down_since_ns": down_since, "down_s": round(down_s, 3)})
        try:
            self.journal.close_condition(self._link_key, restored)
            self._maybe_open = False
        except Exception:  # noqa: BLE001 - an event sink failure must not stop shipping; tried again next time
            log.exception("InfluxDB writer: could not record the end of the outage")

    def _failed(self, err: Retryable) -> None:
        now = time.time_ns()
        with self._stats_lock:
            self._stats.retries += 1
            self._stats.last_error = str(err)
            first = self._stats.down_since_ns is None
            if first:
                self._stats.down_since_ns = now
            self._stats.connected = False
        if first:
            log.warning("InfluxDB %s write failed, retrying until it works: %s", self.target, err)
            self._maybe_open = True
            lost = Event("", "connection_lost", f"InfluxDB {self.target} does not accept writes: {err}",
                         now, "warning", {"target": self.target, "error": str(err)[:500]})
            try:
                # False when it is open already: lost before a restart, and the partner is still to come.
                self.journal.open_condition(self._link_key, lost)
            except Exception:  # noqa: BLE001 - an event sink failure must not stop shipping
                log.exception("InfluxDB writer: could not record the outage")

    def _note_error(self, message: str) -> None:
        with self._stats_lock:
            self._stats.last_error = message

    def _emit(self, event: Event) -> None:
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - an event sink failure must not stop shipping
            log.exception("InfluxDB writer: could not record event %s", event.kind)

    # -- waiting ------------------------------------------------------------------------------

    def _delay(self, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            delay = min(retry_after_s, _MAX_RETRY_AFTER_S)
        else:
            # Exponential backoff with "equal jitter": at least half the step, so retries from many
            # agents spread out without ever hammering a recovering server.
            step = min(self.cfg.max_backoff_s, _FIRST_BACKOFF_S * (2 ** min(self._attempt, 30)))
            delay = step / 2 + random.uniform(0, step / 2)
        self._attempt += 1
        with self._stats_lock:
            self._stats.last_retry_delay_s = delay
        return delay

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)


class _EventJournal(MemoryJournal):
    """Conditions in memory, their events through on_event (a writer without the pipeline, e.g. in tests)."""

    def __init__(self, on_event: Callable[[Event], None]):
        super().__init__()
        self._on_event = on_event

    def event(self, event: Event) -> None:
        """Hand the event on."""
        self._on_event(event)
