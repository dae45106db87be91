"""The pipeline's rendering shortcuts (plain-float hot path, cached line heads) write exactly the
lines the reference renderer, lineprotocol.render_line, writes for the same fields."""

from __future__ import annotations

import pytest

from edge.assignments import AssignmentBook, AssignmentRequest
from edge.config import MachineConfig
from edge.lineprotocol import render_line
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.readings import Ingest, Reading

MACHINE = MachineConfig.model_validate({
    "id": "furnace-1", "kind": "furnace", "manufacturer": "M", "model": "X", "serial": "1",
    "connection": {"type": "mqtt", "topic": "t"},
    "signals": [
        {"name": "t1", "source": {"path": "a.t1"}, "measurement": "heat_treat", "field": "zone1_temp", "unit": "C"},
        {"name": "t2", "source": {"path": "a.t2"}, "measurement": "heat_treat", "field": "t2", "unit": "C"},
        {"name": "o2", "source": {"path": "a.o2"}, "measurement": "heat_treat", "field": "o2", "unit": "ppm",
         "limits": {"warn_high": 50}},
        {"name": "step", "source": {"path": "b.step"}, "measurement": "program", "field": "step", "unit": "1",
         "type": "int"},
        {"name": "name", "source": {"path": "b.name"}, "measurement": "program", "field": "name", "unit": "1",
         "type": "str"},
        {"name": "door", "source": {"path": "b.door"}, "measurement": "heat_treat", "field": "door", "unit": "1",
         "type": "bool"},
    ],
})


@pytest.fixture
def pipe(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite", budget_bytes=64 * 1024 * 1024, fsync=False)
    book = AssignmentBook(tmp_path / "a.sqlite")
    yield Pipeline([MACHINE], outbox, book)
    outbox.close()
    book.close()


def _lines(pipe) -> list[str]:
    return [line for row in pipe.outbox.take(10_000) for line in row.data.split("\n")]


def test_mixed_snapshot_matches_the_reference_renderer(pipe):
    """Hot floats, a limit signal, int, str, bool, a bad reading, an unknown signal, two timestamps
    and two devices whose codes need escaping: every line equals render_line's."""
    pipe.assignments.assign("furnace-1", AssignmentRequest(job="J:1", devices=["D,1", "D 2"], start_ns=1))
    pipe.submit([Ingest("furnace-1", [
        Reading("t1", 812.25, 100), Reading("o2", 80.0, 100), Reading("step", 4, 100),
        Reading("t2", None, 100, quality="bad", status="null in payload"), Reading("name", 'soak "A"', 100),
        Reading("nope", 1.0, 100), Reading("t2", 799.5, 200), Reading("door", True, 100),
        Reading("t1", 1e-300, 200), Reading("t2", -0.0, 100),
    ], received_ns=999)])
    expected = []
    for device in ("D,1", "D 2"):
        tags = {"machine": "furnace-1", "job": "J:1", "device": device}
        expected += [
            render_line("heat_treat", tags, {"zone1_temp": 812.25, "o2": 80.0, "t2_status": "null in payload",
                                             "door": True, "t2": -0.0}, 100),
            render_line("program", tags, {"step": 4, "name": 'soak "A"'}, 100),
            render_line("heat_treat", tags, {"t2": 799.5, "zone1_temp": 1e-300}, 200),
        ]
    lines = [line for line in _lines(pipe) if not line.startswith("amtrace_events")]
    assert sorted(lines) == sorted(expected)
    assert lines[0] == ('heat_treat,device=D\\,1,job=J:1,machine=furnace-1 zone1_temp=812.25,o2=80.0,'
                        't2_status="null in payload",door=true,t2=-0.0 100')
    assert pipe.stats.field_values == 2 * (5 + 2 + 2)
    assert pipe.stats.unknown_signal == 1


def test_line_heads_follow_the_job_at_each_timestamp(pipe):
    """The cached heads change with the assignment: before, during and after a job."""
    book = pipe.assignments
    book.assign("furnace-1", AssignmentRequest(job="J1", devices=["A"], start_ns=100))
    book.release("furnace-1", end_ns=200)
    book.assign("furnace-1", AssignmentRequest(job="J2", devices=["B", "C"], start_ns=300))
    for ts in (50, 150, 250, 350, 150):
        pipe.submit([Ingest("furnace-1", [Reading("t2", float(ts), ts)], received_ns=0)])
    assert _lines(pipe) == [
        "heat_treat,machine=furnace-1 t2=50.0 50",
        "heat_treat,device=A,job=J1,machine=furnace-1 t2=150.0 150",
        "heat_treat,machine=furnace-1 t2=250.0 250",
        "heat_treat,device=B,job=J2,machine=furnace-1 t2=350.0 350",
        "heat_treat,device=C,job=J2,machine=furnace-1 t2=350.0 350",
        "heat_treat,device=A,job=J1,machine=furnace-1 t2=150.0 150",
    ]


def test_non_finite_float_is_refused_not_rendered(pipe):
    """An infinite value of a plain float signal leaves the hot path and is refused with a status."""
    pipe.submit([Ingest("furnace-1", [Reading("t2", float("inf"), 10), Reading("t1", 1.5, 10)], received_ns=0)])
    assert _lines(pipe) == ['heat_treat,machine=furnace-1 t2_status="rejected: inf is not a measurement",'
                            'zone1_temp=1.5 10']
    assert pipe.stats.rejected_values == 1
