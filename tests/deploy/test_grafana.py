"""deploy/grafana/: the committed dashboards are what the code builds, and every query in them, run against a real
InfluxDB holding what a real agent wrote (a machine before and during a job with two device codes, one excursion),
returns the series a person looking at the dashboard expects."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "edge"))
from agentkit import N_SIGNALS, AgentProcess, Publisher, influx_count, machine_yaml, snapshot, wait_until  # noqa: E402

GRAFANA = ROOT / "deploy" / "grafana"
T0_MS = 1_767_225_600_000  # machine timestamps, fixed so the expected series are exact
MACHINE, JOB, DEVICES = "furnace-g1", "JOB-G", ["DEV-G1", "DEV-G2"]
PER_PHASE = 20  # messages 100 ms apart: before the job (machine only), then during it
TIME_FILTER = f"time >= {T0_MS}ms AND time <= {T0_MS + 60_000}ms"  # how Grafana expands $timeFilter
INTERVAL = "100ms"  # $__interval: one bucket per message


def _generator():
    spec = importlib.util.spec_from_file_location("amtrace_grafana_dashboards", GRAFANA / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboards_are_what_the_code_builds(tmp_path, capsys):
    gen = _generator()
    assert gen.main(["--check"]) == 0, capsys.readouterr().err
    shutil.copytree(GRAFANA / "dashboards", tmp_path / "dashboards")
    edited = tmp_path / "dashboards" / "amtrace-job.json"
    edited.write_text(edited.read_text().replace("LIMIT 500", "LIMIT 50"))  # a hand edit
    assert gen.main(["--check", "--out", str(tmp_path / "dashboards")]) == 1
    assert "amtrace-job.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, mosquitto, influxdb):
    """What a real agent wrote: 20 messages of the machine alone, then 20 during a job with two devices, message 25
    with s0 at 150 (above its warning limit 100)."""
    tmp = tmp_path_factory.mktemp("grafana")
    db = "grafana_queries"
    influxdb.create_database(db)
    from agentkit import write_agent
    m = machine_yaml(MACHINE, mosquitto.port, limits_on="s0")
    agent = AgentProcess(write_agent(tmp, machines=[m], influx_url=influxdb.url, database=db)).start()
    try:
        agent.api("PUT", f"/machines/{MACHINE}/assignment", {"job": JOB, "devices": DEVICES,
                                                             "start_ns": (T0_MS + 10_000) * 1_000_000})
        pub = Publisher(mosquitto.port, client_id="grafana-publisher")
        pub.publish(m["connection"]["topic"],
                    [snapshot(i, T0_MS + i * 100) for i in range(PER_PHASE)]
                    + [snapshot(i, T0_MS + 10_000 + (i - PER_PHASE) * 100, hot=(i == PER_PHASE + 5))
                       for i in range(PER_PHASE, 2 * PER_PHASE)])
        pub.close()
        for d in DEVICES:
            wait_until(lambda d=d: influx_count(influxdb, db, f"\"device\" = '{d}'") == PER_PHASE * N_SIGNALS, 30,
                       f"the job's values under {d}")
        wait_until(lambda: influx_count(influxdb, db, "\"device\" = ''") == PER_PHASE * N_SIGNALS, 30,
                   "the machine's values before the job")
    finally:
        agent.stop()
    return influxdb, db


def _queries(name: str) -> dict[str, str]:
    """Title (panel) or $name (variable) → InfluxQL of one committed dashboard."""
    board = json.loads((GRAFANA / "dashboards" / f"amtrace-{name}.json").read_text())
    out = {f"${v['name']}": v["query"] for v in board["templating"]["list"] if v["type"] == "query"}
    out |= {p["title"]: t["query"] for p in board["panels"] for t in p["targets"]}
    return out


def _run(recorded, query: str, **variables: str) -> list[dict]:
    """The query as Grafana sends it with these variable values: its series."""
    influx, db = recorded
    q = query.replace("$timeFilter", TIME_FILTER).replace("$__interval", INTERVAL)
    for k, v in variables.items():
        q = q.replace(f"${k}", v)
    assert not re.search(r"\$\w", q), f"unexpanded variable in {q}"
    answer = influx.query(q, db=db)["results"][0]
    assert "error" not in answer, (q, answer)
    return answer.get("series", [])


def _values(series: list[dict]) -> set[str]:
    """The values of a SHOW TAG VALUES / SHOW MEASUREMENTS answer."""
    return {row[-1] for s in series for row in s["values"]}


def _picker(recorded, query: str, regex: str | None = None, **variables: str) -> set[str]:
    found = _values(_run(recorded, query, **variables))
    if regex:  # Grafana's variable regex (JavaScript; the same syntax here)
        found = {v for v in found if re.match(regex.strip("/"), v)}
    return found


def test_device_dashboard(recorded):
    q = _queries("device")
    board = json.loads((GRAFANA / "dashboards" / "amtrace-device.json").read_text())
    regex = next(v["regex"] for v in board["templating"]["list"] if v["name"] == "measurement")
    assert set(DEVICES) <= _picker(recorded, q["$device"])
    assert _picker(recorded, q["$measurement"], regex, device="DEV-G1") == {"e2e_process"}
    assert _picker(recorded, q["$measurement"], None, device="DEV-G1") == {"e2e_process", "amtrace_events"}
    tags = _run(recorded, q["Machines and jobs of $device"], device="DEV-G1")
    assert {tuple(r) for s in tags for r in s["values"]} == {("machine", MACHINE), ("job", JOB)}
    [series] = _run(recorded, q["$measurement of $device"], device="DEV-G1", measurement="e2e_process")
    assert series["columns"] == ["time", *sorted(f"mean_f{i}" for i in range(N_SIGNALS))]
    assert len(series["values"]) == PER_PHASE  # only the job's part: the machine alone is not this device's
    f0 = series["columns"].index("mean_f0")
    assert max(r[f0] for r in series["values"]) == 150.0  # the excursion is on the plot
    events = _run(recorded, q["Events: excursions, interlocks, connection losses"], device="DEV-G1")
    kinds = [(r[2], r[3]) for r in events[0]["values"]]
    assert ("excursion", "warning") in kinds and ("excursion_end", "info") in kinds
    assert _run(recorded, q["$measurement of $device"], device="DEV-NONE", measurement="e2e_process") == []


def test_machine_dashboard(recorded):
    q = _queries("machine")
    assert MACHINE in _picker(recorded, q["$machine"])
    alarms = _run(recorded, q["Warnings and alarms in the time range"], machine=MACHINE)
    # One warning, written once per device code of the job.
    assert [(s["tags"], s["values"][0][1]) for s in alarms] == [({"severity": "warning"}, len(DEVICES))]
    assert _values(_run(recorded, q["Device codes recorded on $machine"], machine=MACHINE)) == set(DEVICES)
    [series] = _run(recorded, q["$measurement on $machine"], machine=MACHINE, measurement="e2e_process")
    assert len(series["values"]) == 2 * PER_PHASE  # before and during the job


def test_job_dashboard(recorded):
    q = _queries("job")
    assert JOB in _picker(recorded, q["$job"])
    assert _values(_run(recorded, q["Device codes of job $job"], job=JOB)) == set(DEVICES)
    by_device = _run(recorded, q["$measurement of job $job, by device"], job=JOB, measurement="e2e_process")
    assert sorted(s["tags"]["device"] for s in by_device) == DEVICES
    assert all(len(s["values"]) == PER_PHASE for s in by_device)
    events = _run(recorded, q["Events: excursions, interlocks, connection losses"], job=JOB)
    assert sum(1 for r in events[0]["values"] if r[2] == "excursion") == len(DEVICES)
