"""InfluxWriter with the v1 API (/write) against Debian's real InfluxDB 1.6.

Exact counts everywhere: InfluxDB overwrites a point with the same series and timestamp, so a
count equal to the number of distinct lines proves nothing was lost; the writer's own counters
and the quarantine prove nothing was sent twice by mistake or dropped silently."""

from __future__ import annotations

import gzip
import http.server
import random
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from writerkit import Events, as_blocks, wait_until

from edge.config import InfluxConfig
from edge.outbox import Outbox
from edge.writer import InfluxWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "local"))
import localstack  # noqa: E402

T0 = 1_700_000_000_000_000_000


def lines(measurement: str, start: int, n: int, machine: str = "m1") -> list[str]:
    """n distinct points: one integer field, distinct timestamps."""
    return [f"{measurement},machine={machine},device=DC-{i % 7:03d} v={i}i {T0 + i}" for i in range(start, start + n)]


def count(svc, db: str, measurement: str, field: str = "v") -> int:
    """SELECT count(field) in InfluxDB 1.x; 0 when the measurement does not exist."""
    res = svc.query(f'SELECT count("{field}") FROM "{measurement}"', db)["results"][0]
    if "series" not in res:
        return 0
    return res["series"][0]["values"][0][1]


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite", budget_bytes=256 * 1024 * 1024)
    yield box
    box.close()


def make_writer(url: str, db: str, outbox: Outbox, events: Events, **cfg) -> InfluxWriter:
    cfg.setdefault("max_backoff_s", 0.5)
    return InfluxWriter(InfluxConfig(api="v1", url=url, database=db, **cfg), outbox, on_event=events)


def test_every_line_written_exactly_once(influxdb, outbox):
    db = "w_" + uuid.uuid4().hex[:8]
    events = Events()
    data = lines("once", 0, 12_345)
    outbox.put(as_blocks(data, 15))  # small blocks, as the pipeline makes them
    writer = make_writer(influxdb.url, db, outbox, events, batch_lines=1000)
    writer.start()
    try:
        assert writer.flush(60)
    finally:
        writer.stop()
    assert count(influxdb, db, "once") == 12_345
    s = writer.stats
    assert s.lines_written == 12_345
    assert s.batches == 13  # 1000-line batches of 15-line blocks: 990 lines each, last one 465
    assert (s.retries, s.bisections, s.quarantined_lines, s.connected) == (0, 0, 0, True)
    assert events.kinds() == []
    assert outbox.stats().rows == 0


def test_influxdb_stopped_then_started_loses_nothing(influxdb_factory, outbox):
    svc = influxdb_factory()
    events = Events()
    writer = make_writer(svc.url, "plant", outbox, events, batch_lines=500)
    writer.start()
    try:
        outbox.put(as_blocks(lines("outage", 0, 1000), 10))
        assert writer.flush(60)
        assert count(svc, "plant", "outage") == 1000

        svc.stop()
        outbox.put(as_blocks(lines("outage", 1000, 2000), 10))
        wait_until(lambda: writer.stats.retries >= 3, what="three failed attempts while InfluxDB is down")
        # Nothing is deleted while InfluxDB does not confirm.
        assert outbox.stats().lines == 2000
        assert writer.stats.connected is False
        assert events.kinds() == ["connection_lost"]

        svc.start()
        assert writer.flush(60)
    finally:
        writer.stop()

    assert count(svc, "plant", "outage") == 3000
    assert writer.stats.lines_written == 3000
    lost, restored = events.of("connection_lost"), events.of("connection_restored")
    assert len(lost) == 1 and len(restored) == 1  # once each, never one per retry
    assert events.kinds() == ["connection_lost", "connection_restored"]
    assert lost[0].severity == "warning"
    assert lost[0].fields["target"] == svc.url
    assert lost[0].fields["error"]
    assert restored[0].fields["down_since_ns"] == lost[0].ts_ns
    assert restored[0].ts_ns > lost[0].ts_ns
    assert restored[0].fields["down_s"] == pytest.approx((restored[0].ts_ns - lost[0].ts_ns) / 1e9, abs=1e-3)
    assert writer.stats.retries >= 3


def test_server_down_at_start_database_created_when_it_comes(influxdb_factory, outbox):
    svc = influxdb_factory()
    svc.stop()
    events = Events()
    outbox.put(as_blocks(lines("late", 0, 300), 30))
    writer = make_writer(svc.url, "late_db", outbox, events)
    writer.start()
    try:
        wait_until(lambda: writer.stats.retries >= 2, what="retries while InfluxDB is not running")
        assert outbox.stats().lines == 300
        svc.start()
        assert writer.flush(60)
    finally:
        writer.stop()
    assert count(svc, "late_db", "late") == 300
    assert events.kinds() == ["connection_lost", "connection_restored"]


def test_bad_lines_are_bisected_out_and_quarantined(influxdb, outbox):
    db = "bad_" + uuid.uuid4().hex[:8]
    influxdb.create_database(db)
    events = Events()
    # f is an integer field in InfluxDB from now on.
    outbox.put([("typed,machine=m1 f=1i 1", 1)])
    writer = make_writer(influxdb.url, db, outbox, events)
    writer.start()
    try:
        assert writer.flush(30)
        good = [f"typed,machine=m1 f={i}i {T0 + i}" for i in range(200)]
        conflict = f'typed,machine=m2 f="x" {T0 + 1000}'
        broken = "typed,machine=m3 f= 123"
        batch = good[:77] + [conflict] + good[77:150] + [broken] + good[150:]
        outbox.put(as_blocks(batch, 10))
        assert writer.flush(60)
    finally:
        writer.stop()

    assert count(influxdb, db, "typed", "f") == 201  # the first point plus the 200 good ones
    s = writer.stats
    assert (s.lines_written, s.quarantined_lines) == (201, 2)
    assert s.bisections > 0
    entries = {e.raw.decode(): e for e in outbox.quarantine_entries(source="influxdb")}
    assert set(entries) == {conflict, broken}
    assert "field type conflict" in entries[conflict].reason
    assert "HTTP 400" in entries[conflict].reason
    assert "unable to parse" in entries[broken].reason
    assert entries[conflict].machine_id == "m2" and entries[broken].machine_id == "m3"
    assert all(e.origin == influxdb.url for e in entries.values())
    # A refused line is not a connection problem.
    assert events.kinds() == []
    assert outbox.stats().rows == 0


class SmallBodyInfluxDB(localstack.InfluxDB1):
    """InfluxDB 1.x with a small [http] max-body-size, so that it answers 413 for real."""

    max_body_size = 2048

    def command(self) -> list[str]:
        cmd = super().command()
        conf = self.root / "influxdb.conf"
        conf.write_text(conf.read_text().replace("max-body-size = 0", f"max-body-size = {self.max_body_size}"))
        return cmd


def test_too_large_batches_are_split(tmp_path, outbox):
    svc = SmallBodyInfluxDB(tmp_path / "influx413").start()
    try:
        rng = random.Random(7)
        # Random floats compress poorly, so even gzipped batches exceed 2 KiB and must be split.
        data = [f"big,machine=m1 v={rng.random()!r} {T0 + i}" for i in range(3000)]
        huge = "big,machine=m9 v=1.0,note=\"" + "".join(rng.choice("abcdefghij0123456789") for _ in range(20_000)) + f"\" {T0 + 5000}"
        outbox.put(as_blocks(data, 50) + [(huge, 1)])
        events = Events()
        writer = make_writer(svc.url, "plant", outbox, events, batch_lines=5000)
        writer.start()
        try:
            assert writer.flush(120)
        finally:
            writer.stop()
        assert count(svc, "plant", "big") == 3000
        s = writer.stats
        assert s.splits > 0
        assert (s.lines_written, s.quarantined_lines) == (3000, 1)
        (entry,) = outbox.quarantine_entries()
        assert entry.raw.decode() == huge
        assert "HTTP 413" in entry.reason and "Too Large" in entry.reason
        assert events.kinds() == []
    finally:
        svc.stop(kill=True)


class _FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Answers the scripted statuses in order, then 204; records arrival times and bodies."""

    script: list[tuple[int, dict]] = []
    seen: list[tuple[float, str, bytes, dict]] = []

    def do_POST(self):  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append((time.monotonic(), self.path, body, dict(self.headers)))
        status, headers = type(self).script.pop(0) if type(self).script else (204, {})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        payload = b'{"error":"scripted"}' if status >= 300 else b""
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_429_retry_after_and_5xx_are_retried(outbox):
    """A real InfluxDB cannot be made to answer 429 or 503 on demand, so for these statuses only a
    scripted local HTTP server stands in: 429 with Retry-After: 1, then 503, then 204."""
    _FlakyHandler.script = [(429, {"Retry-After": "1"}), (503, {}), (204, {})]
    _FlakyHandler.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    events = Events()
    data = lines("flaky", 0, 100)
    outbox.put(as_blocks(data, 10))
    writer = make_writer(url, "plant", outbox, events, max_backoff_s=0.05, create_database=False)
    writer.start()
    try:
        assert writer.flush(30)
    finally:
        writer.stop()
        server.shutdown()
        server.server_close()

    seen = _FlakyHandler.seen
    assert len(seen) == 3
    # The same batch each time, gzip-compressed, to /write with db and ns precision.
    for _, path, body, headers in seen:
        assert path.startswith("/write?") and "db=plant" in path and "precision=ns" in path
        assert headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(body).decode() == "\n".join(data)
    # Retry-After was honoured although max_backoff_s is 50 ms.
    assert seen[1][0] - seen[0][0] >= 1.0
    s = writer.stats
    assert (s.retries, s.lines_written, s.batches) == (2, 100, 1)
    assert events.kinds() == ["connection_lost", "connection_restored"]
    assert "HTTP 429" in events.of("connection_lost")[0].fields["error"]
    assert outbox.stats().rows == 0


_SHIPPING_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from edge.config import InfluxConfig
from edge.outbox import Outbox
from edge.writer import InfluxWriter
box = Outbox(sys.argv[2], budget_bytes=10**9)
writer = InfluxWriter(InfluxConfig(api="v1", url=sys.argv[3], database=sys.argv[4], batch_lines=500),
                      box, on_event=lambda e: None)
writer.start()
while True:
    print(writer.stats.lines_written, flush=True)
    time.sleep(0.005)
"""


def test_agent_killed_while_shipping_resumes_without_loss(influxdb, tmp_path):
    """kill -9 of the agent in the middle of shipping: after a restart every line is in InfluxDB once."""
    import os
    import signal
    import subprocess

    db = "kill_" + uuid.uuid4().hex[:8]
    path = tmp_path / "outbox.sqlite"
    total = 100_000
    with Outbox(path, budget_bytes=10**9, fsync=False) as box:
        box.put(as_blocks(lines("killed", 0, total), 20))
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _SHIPPING_CHILD, str(root), str(path), influxdb.url, db],
                             stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if int(line) >= 10_000:
                break
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    box = Outbox(path, budget_bytes=10**9)
    try:
        left = box.stats().lines
        assert 0 < left < total  # the kill landed mid-way: some confirmed and deleted, some not
        events = Events()
        writer = make_writer(influxdb.url, db, box, events)
        writer.start()
        try:
            assert writer.flush(60)
        finally:
            writer.stop()
        assert writer.stats.lines_written == left
    finally:
        box.close()
    # Lines of the batch in flight at the kill were sent again: same points, no duplicates.
    assert count(influxdb, db, "killed") == total


def test_full_quarantine_holds_the_batch_and_alarms(influxdb, tmp_path):
    """When a refused line cannot be quarantined, nothing is deleted; shipping resumes once there is room."""
    db = "qfull_" + uuid.uuid4().hex[:8]
    box = Outbox(tmp_path / "o.sqlite", budget_bytes=10**8, quarantine_budget_bytes=400)
    try:
        old = box.add_quarantine(source="mqtt", origin="plant/m1", raw=b"x" * 250, reason="old entry")
        batch = lines("qf", 0, 50) + ["qf,machine=m1 v= 1"]
        box.put(as_blocks(batch, 10))
        events = Events()
        writer = make_writer(influxdb.url, db, box, events, max_backoff_s=0.1)
        writer.start()
        try:
            wait_until(lambda: events.kinds() == ["quarantine_full"], what="the quarantine_full alarm")
            assert events.of("quarantine_full")[0].severity == "alarm"
            assert box.stats().lines == 51  # the whole batch stays in the outbox
            box.remove_quarantine([old])  # an operator reviewed the old entry
            assert writer.flush(30)
        finally:
            writer.stop()
        assert count(influxdb, db, "qf") == 50
        (entry,) = box.quarantine_entries()
        assert entry.raw == b"qf,machine=m1 v= 1" and "unable to parse" in entry.reason
        assert events.kinds() == ["quarantine_full"]
    finally:
        box.close()
