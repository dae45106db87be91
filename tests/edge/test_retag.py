"""Re-tagging against a real InfluxDB: readings written with only the machine tag (before the agent knew the
load) are written again under each device code of the load, with their stored field types; requests survive a
restart; without InfluxQL (api v2) the agent says so instead of pretending."""

from __future__ import annotations

import uuid

import pytest

import edge.retag as retag
from edge.assignments import AssignmentBook
from edge.config import InfluxConfig, MachineConfig
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.readings import Ingest, Reading
from edge.retag import Retagger
from edge.writer import InfluxWriter

NS = 1_000_000_000
MACHINE = MachineConfig.model_validate({
    "id": "washer-01", "kind": "washer", "manufacturer": "Miele", "model": "PG 8536", "serial": "W1",
    "connection": {"type": "mqtt", "topic": "t"},
    "signals": [
        {"name": "bath_temp_c", "source": {"path": "t"}, "measurement": "washer", "field": "bath_temp_c",
         "unit": "degC"},
        {"name": "program_step", "source": {"path": "s"}, "measurement": "washer", "field": "program_step",
         "unit": "1", "type": "int"}]})


@pytest.fixture
def plant(tmp_path, influxdb):
    """Outbox, pipeline without any assignment (readings carry only the machine tag), writer to a fresh db."""
    db = f"retag_{uuid.uuid4().hex[:8]}"
    influxdb.create_database(db)
    cfg = InfluxConfig(url=influxdb.url, database=db)
    outbox = Outbox(tmp_path / "outbox.sqlite", budget_bytes=64 * 1024 * 1024, fsync=False)
    book = AssignmentBook(tmp_path / "book.sqlite")
    pipe = Pipeline([MACHINE], outbox, book)
    writer = InfluxWriter(cfg, outbox, on_event=lambda e: None)
    writer.start()
    yield db, cfg, outbox, pipe, writer
    writer.stop()
    outbox.close()
    book.close()


def _count(influxdb, db: str, where: str) -> int:
    res = influxdb.query(f"SELECT count(bath_temp_c) FROM washer WHERE {where}", db=db)["results"][0].get("series")
    return res[0]["values"][0][1] if res else 0


def test_untagged_readings_are_written_again_under_each_device(plant, influxdb, tmp_path, monkeypatch):
    db, cfg, outbox, pipe, writer = plant
    monkeypatch.setattr(retag, "SETTLE_S", 0.0)
    t0 = 1_790_000_000 * NS
    pipe.submit([Ingest("washer-01", [Reading("bath_temp_c", 55.0 + i, t0 + i * NS),
                                      Reading("program_step", 3, t0 + i * NS)], received_ns=t0 + i * NS)
                 for i in range(30)])
    assert writer.flush(30)
    assert _count(influxdb, db, "device = 'D1'") == 0
    events = []
    r = Retagger(tmp_path / "retag.sqlite", cfg, outbox, events.append)
    assert r.request("washer-01", "cycle-7", ["D1", "D2"], t0 + 5 * NS, t0 + 24 * NS) is True
    assert r.request("washer-01", "cycle-7", ["D1", "D2"], t0 + 5 * NS, t0 + 24 * NS) is False  # once
    r.stop()
    r = Retagger(tmp_path / "retag.sqlite", cfg, outbox, events.append)  # the agent restarted: still queued
    assert [q.state for q in r.requests()] == ["pending"]
    assert r.run_once() == 1
    assert writer.flush(30)
    assert _count(influxdb, db, "device = 'D1' AND job = 'cycle-7'") == 20
    assert _count(influxdb, db, "device = 'D2'") == 20
    assert _count(influxdb, db, "device = ''") == 30  # the untagged copies stay: nothing accepted is deleted
    step = influxdb.query("SHOW FIELD KEYS FROM washer", db=db)["results"][0]["series"][0]["values"]
    assert ["program_step", "integer"] in step  # the stored type, kept (a float rewrite would be refused)
    [ev] = events
    assert ev.kind == "retag" and ev.message.startswith("20 readings of washer-01 written before the agent")
    assert r.requests()[0].state == "done" and r.run_once() == 0
    r.stop()


def test_without_influxql_the_agent_says_the_readings_keep_no_device_tag(plant, tmp_path, monkeypatch):
    _, cfg, outbox, _, _ = plant
    monkeypatch.setattr(retag, "SETTLE_S", 0.0)
    events = []
    r = Retagger(tmp_path / "retag.sqlite", cfg.model_copy(update={"api": "v2"}), outbox, events.append)
    r.request("washer-01", "cycle-8", ["D1"], 1 * NS, 2 * NS)
    r.run_once()
    [ev] = events
    assert (ev.kind, ev.severity) == ("retag_unavailable", "alarm")
    assert r.requests()[0].state == "failed"
    r.stop()


def test_only_cycles_that_ran_unbooked_are_re_tagged_whole(tmp_path):
    """A cycle the agent booked was tagged live (its late start is re-tagged when booked); one recorded
    after it ended, or between two looks at the server, was never booked: all of it is re-tagged."""
    from edge.assignments import AssignmentRequest
    from edge.serverlink import retag_stretches

    book = AssignmentBook(tmp_path / "book.sqlite")
    book.assign("s-1", AssignmentRequest(job="cycle-1", devices=["D1"], start_ns=100, source="server"))
    book.release("s-1", end_ns=200)
    from edge.contract import CycleWindow

    windows = [CycleWindow(job_id="cycle-3", device_codes=["D3"], start_ns=500, end_ns=None),
               CycleWindow(job_id="cycle-2", device_codes=["D2", "D4"], start_ns=300, end_ns=400),
               CycleWindow(job_id="cycle-1", device_codes=["D1"], start_ns=90, end_ns=200)]
    assert retag_stretches(book, "s-1", windows) == [("cycle-2", ["D2", "D4"], 300, 400)]
    book.close()
