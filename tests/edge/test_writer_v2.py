"""InfluxWriter with the v2 API (influxdb-client, /api/v2/write) against a real VictoriaMetrics.

VictoriaMetrics stores measurement+field as the metric `<measurement>_<field>` with tags as labels,
keeps millisecond timestamps (so test points are 1 ms apart) and, started with
-dedup.minScrapeInterval=1ms, counts a sample written twice once, as InfluxDB does."""

from __future__ import annotations

import http.server
import json
import threading
import uuid

import httpx
import pytest

from writerkit import Events, as_blocks, wait_until

from edge.config import InfluxConfig
from edge.outbox import Outbox
from edge.writer import InfluxWriter, Retryable, TooLarge, WriteRejected
from edge.writer.v2 import V2Transport


T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def vm_lines(measurement: str, start: int, n: int) -> list[str]:
    """n distinct points 1 ms apart (VictoriaMetrics keeps milliseconds)."""
    return [f"{measurement},machine=m1,device=DC-{i % 5:03d} v={i}i {T0 + i * MS}" for i in range(start, start + n)]


def vm_count(svc, metric: str) -> int:
    """Samples VictoriaMetrics returns for metric (after making recent writes searchable)."""
    httpx.get(svc.url + "/internal/force_flush", timeout=10).raise_for_status()
    r = httpx.get(svc.url + "/api/v1/export", params={"match[]": f'{{__name__="{metric}"}}'}, timeout=30)
    r.raise_for_status()
    return sum(len(json.loads(line)["values"]) for line in r.text.splitlines() if line.strip())


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite", budget_bytes=256 * 1024 * 1024)
    yield box
    box.close()


def make_writer(url: str, outbox: Outbox, events: Events, **cfg) -> InfluxWriter:
    cfg.setdefault("max_backoff_s", 0.5)
    return InfluxWriter(InfluxConfig(api="v2", url=url, org="plant", bucket="telemetry", **cfg), outbox,
                        on_event=events)


def test_v2_every_line_written_exactly_once(victoria, outbox):
    m = "v2once_" + uuid.uuid4().hex[:6]
    outbox.put(as_blocks(vm_lines(m, 0, 12_000), 20))
    events = Events()
    writer = make_writer(victoria.url, outbox, events, batch_lines=5000)
    writer.start()
    try:
        assert writer.flush(60)
    finally:
        writer.stop()
    assert vm_count(victoria, f"{m}_v") == 12_000
    s = writer.stats
    assert (s.lines_written, s.batches, s.retries, s.quarantined_lines) == (12_000, 3, 0, 0)
    assert events.kinds() == []


def test_v2_retried_write_lands_on_the_same_points(victoria, outbox):
    m = "v2idem_" + uuid.uuid4().hex[:6]
    data = vm_lines(m, 0, 3000)
    events = Events()
    writer = make_writer(victoria.url, outbox, events)
    writer.start()
    try:
        # The same lines twice, as after a write whose confirmation was lost: counted once.
        outbox.put(as_blocks(data, 100))
        assert writer.flush(60)
        outbox.put(as_blocks(data, 100))
        assert writer.flush(60)
    finally:
        writer.stop()
    assert writer.stats.lines_written == 6000
    assert vm_count(victoria, f"{m}_v") == 3000


def test_v2_server_stopped_then_started_loses_nothing(victoria_factory, outbox):
    svc = victoria_factory()
    m = "v2outage"
    events = Events()
    writer = make_writer(svc.url, outbox, events, batch_lines=500)
    writer.start()
    try:
        outbox.put(as_blocks(vm_lines(m, 0, 1000), 10))
        assert writer.flush(60)
        svc.stop()
        outbox.put(as_blocks(vm_lines(m, 1000, 1500), 10))
        wait_until(lambda: writer.stats.retries >= 3, what="failed attempts while VictoriaMetrics is down")
        assert outbox.stats().lines == 1500
        svc.start()
        assert writer.flush(60)
    finally:
        writer.stop()
    assert vm_count(svc, f"{m}_v") == 2500
    assert events.kinds() == ["connection_lost", "connection_restored"]
    lost, restored = events.of("connection_lost")[0], events.of("connection_restored")[0]
    assert restored.fields["down_since_ns"] == lost.ts_ns
    assert restored.fields["down_s"] > 0


class _ScriptedV2(http.server.BaseHTTPRequestHandler):
    """Answers one scripted status with a JSON body like InfluxDB 2.x; records what it received."""

    answer: tuple[int, dict, bytes] = (204, {}, b"")
    seen: list[tuple[str, dict, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append((self.path, dict(self.headers), body))
        status, headers, payload = type(self).answer
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_v2(monkeypatch):
    """InfluxDB 2.x error answers (400, 413, 429) cannot be produced by VictoriaMetrics, which
    accepts what it can parse; only for mapping those statuses a scripted local server stands in."""
    _ScriptedV2.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedV2)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AMTRACE_TEST_TOKEN", "s3cret")
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_v2_sends_token_org_bucket_gzip_and_maps_statuses(scripted_v2):
    cfg = InfluxConfig(api="v2", url=scripted_v2, org="plant", bucket="telemetry", token_env="AMTRACE_TEST_TOKEN")
    t = V2Transport(cfg)
    try:
        _ScriptedV2.answer = (204, {}, b"")
        t.send("m v=1i 1")
        path, headers, body = _ScriptedV2.seen[-1]
        assert path.startswith("/api/v2/write?")
        assert "org=plant" in path and "bucket=telemetry" in path and "precision=ns" in path
        assert headers["Authorization"] == "Token s3cret"
        assert headers["Content-Encoding"] == "gzip"

        _ScriptedV2.answer = (400, {"Content-Type": "application/json"},
                              b'{"code":"invalid","message":"unable to parse \'m v=\': missing field value"}')
        with pytest.raises(WriteRejected) as rejected:
            t.send("m v= 1")
        assert rejected.value.status == 400
        assert rejected.value.message == "unable to parse 'm v=': missing field value"

        _ScriptedV2.answer = (413, {"Content-Type": "application/json"},
                              b'{"code":"request too large","message":"request too large"}')
        with pytest.raises(TooLarge):
            t.send("m v=1i 1")

        _ScriptedV2.answer = (429, {"Retry-After": "7"}, b"")
        with pytest.raises(Retryable) as retry:
            t.send("m v=1i 1")
        assert (retry.value.status, retry.value.retry_after_s) == (429, 7.0)

        _ScriptedV2.answer = (503, {}, b"")
        with pytest.raises(Retryable) as retry:
            t.send("m v=1i 1")
        assert (retry.value.status, retry.value.retry_after_s) == (503, None)
    finally:
        t.close()


def test_v2_connection_refused_is_retryable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = V2Transport(InfluxConfig(api="v2", url=f"http://127.0.0.1:{port}", timeout_s=2))
    try:
        with pytest.raises(Retryable) as retry:
            t.send("m v=1i 1")
        assert retry.value.status is None
    finally:
        t.close()


def test_v2_missing_token_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AMTRACE_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ValueError, match="AMTRACE_NO_SUCH_TOKEN"):
        V2Transport(InfluxConfig(api="v2", token_env="AMTRACE_NO_SUCH_TOKEN"))

