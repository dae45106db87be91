"""The pipeline: signal map, device tags, status of bad readings, live limits, back-pressure."""

from __future__ import annotations

import pytest

from edge.assignments import AssignmentBook, AssignmentRequest
from edge.config import MachineConfig
from edge.outbox import Outbox
from edge.pipeline import Pipeline
from edge.readings import Event, Ingest, OutboxFull, Reading

MACHINE = MachineConfig.model_validate({
    "id": "lpbf-t", "kind": "lpbf_printer", "manufacturer": "M", "model": "X", "serial": "1",
    "connection": {"type": "mqtt", "topic": "t"},
    "signals": [
        {"name": "o2", "source": {"path": "o2"}, "measurement": "lpbf", "field": "o2_ppm", "unit": "ppm",
         "limits": {"warn_high": 500, "alarm_high": 1000}},
        {"name": "layer", "source": {"path": "layer"}, "measurement": "lpbf", "field": "layer", "unit": "1", "type": "int"},
        {"name": "state", "source": {"path": "state"}, "measurement": "job", "field": "state", "unit": "1", "type": "str"},
    ],
})


@pytest.fixture
def pipe(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite", budget_bytes=64 * 1024 * 1024, fsync=False)
    book = AssignmentBook(tmp_path / "a.sqlite")
    p = Pipeline([MACHINE], outbox, book)
    yield p
    outbox.close()
    book.close()


def _lines(pipe) -> list[str]:
    return [line for row in pipe.outbox.take(10_000) for line in row.data.split("\n")]


def test_one_line_per_measurement_and_device(pipe):
    pipe.assignments.assign("lpbf-t", AssignmentRequest(job="J1", devices=["D1", "D2"], start_ns=1))
    pipe.submit([Ingest("lpbf-t", [Reading("o2", 120.5, 1000), Reading("layer", 7, 1000), Reading("state", "building", 1000)],
                        received_ns=5000)])
    assert sorted(_lines(pipe)) == [
        'job,device=D1,job=J1,machine=lpbf-t state="building" 1000',
        'job,device=D2,job=J1,machine=lpbf-t state="building" 1000',
        "lpbf,device=D1,job=J1,machine=lpbf-t o2_ppm=120.5,layer=7i 1000",
        "lpbf,device=D2,job=J1,machine=lpbf-t o2_ppm=120.5,layer=7i 1000",
    ]
    assert pipe.stats.readings_in == 3
    assert pipe.stats.field_values == 6


def test_receive_time_is_used_without_source_time_and_no_job_means_machine_only(pipe):
    pipe.submit([Ingest("lpbf-t", [Reading("o2", 100.0)], received_ns=42)])
    assert _lines(pipe) == ["lpbf,machine=lpbf-t o2_ppm=100.0 42"]


def test_bad_status_is_recorded_as_such_never_as_a_value(pipe):
    pipe.submit([Ingest("lpbf-t", [Reading("o2", None, 10, quality="bad", status="BadSensorFailure"),
                                   Reading("layer", 3, 10, quality="uncertain", status="UncertainLastUsableValue")],
                        received_ns=11)])
    assert _lines(pipe) == ['lpbf,machine=lpbf-t o2_ppm_status="BadSensorFailure",layer_status="UncertainLastUsableValue",layer=3i 10']


def test_wrong_type_is_refused_with_a_status_not_written_as_a_value(pipe):
    pipe.submit([Ingest("lpbf-t", [Reading("layer", 2.5, 10)], received_ns=11)])
    assert _lines(pipe) == ['lpbf,machine=lpbf-t layer_status="rejected: expected an integer, got number 2.5" 10']
    assert pipe.stats.rejected_values == 1


def test_excursions_are_events_on_transitions_only(pipe):
    values = [100, 600, 700, 1200, 900, 400]
    for i, v in enumerate(values):
        pipe.submit([Ingest("lpbf-t", [Reading("o2", float(v), 100 + i)], received_ns=0)])
    events = [line for line in _lines(pipe) if line.startswith("amtrace_events")]
    assert [e.split(",")[1:3] + [e.split(" ")[-1]] for e in events] == [
        ["kind=excursion", "machine=lpbf-t", "101"],
        ["kind=excursion", "machine=lpbf-t", "103"],
        ["kind=excursion", "machine=lpbf-t", "104"],
        ["kind=excursion_end", "machine=lpbf-t", "105"],
    ]
    assert "severity=warning" in events[0] and "severity=alarm" in events[1] and "severity=warning" in events[2]
    assert 'message="o2 600 ppm is above the warning limit 500 ppm"' in events[0]


def test_a_refused_ingest_raises_its_excursion_again_when_it_comes_back(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite", budget_bytes=1024 * 1024, fsync=False)
    pipe = Pipeline([MACHINE], outbox, AssignmentBook(tmp_path / "a.sqlite"))
    filler = "x" * 4000
    with pytest.raises(OutboxFull):
        for i in range(10_000):
            outbox.put([(f'fill f="{filler}" {i}', 1)])
    hot = Ingest("lpbf-t", [Reading("o2", 2000.0, 7)], received_ns=0)
    with pytest.raises(OutboxFull):
        pipe.submit([hot])
    pipe.event(Event("lpbf-t", "backpressure", "held", 8, "alarm"))  # kept in memory meanwhile
    while outbox.stats().full:
        outbox.delete([r.id for r in outbox.take(50)])
    pipe.submit([hot])
    rest = [line for row in outbox.take(100_000) for line in row.data.split("\n") if not line.startswith("fill")]
    # the disk-budget alarm at the first refusal, the event held meanwhile, the release, then the excursion again
    assert [line.split(",")[1] for line in rest if line.startswith("amtrace_events")] == [
        "kind=outbox_full", "kind=backpressure", "kind=outbox_released", "kind=excursion"]
    assert "lpbf,machine=lpbf-t o2_ppm=2000.0 7" in rest
    outbox.close()


def test_unknown_machine_is_an_error(pipe):
    with pytest.raises(KeyError, match="not configured"):
        pipe.submit([Ingest("nope", [Reading("o2", 1.0)], received_ns=1)])
