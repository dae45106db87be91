"""Grafana dashboards for amtrace process data, built from code with grafana-foundation-sdk.

    .venv/bin/python deploy/grafana/dashboards.py [--out deploy/grafana/dashboards] [--check]

Writes one JSON file per dashboard (process data by device code, by machine, by job) for Grafana's file
provisioning or its import dialog. The JSON is this script's output and is committed so a plant without Python
can import it; `--check` exits 1 when the committed files differ from what the code builds (run by make test,
with every query run against a real InfluxDB: tests/deploy/test_grafana.py).

The queries are InfluxQL against the database the edge agents write (InfluxDB 1.x, or 2.x/3.x through their v1
compatibility API with a DBRP mapping). The schema is the agent's (edge/pipeline.py): every reading is a point of
its signal's measurement tagged `machine`, and while a job runs `job` and `device` (one point per device code);
events (excursions, interlocks, connection losses …) are points of `amtrace_events` tagged `kind` and
`severity`, with the same machine/job/device tags. Measurements named `amtrace_*` are the agent's own records
and are left out of the process-data pickers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = dm.DataSourceRef(type_val="influxdb", uid="${datasource}")
EVENTS = "amtrace_events"
# Grafana applies this (JavaScript) regex to the measurement picker: the agent's own measurements are not process data.
PROCESS_MEASUREMENTS = "/^(?!amtrace_).*/"


class InfluxQL(cogvariants.Dataquery):
    """A raw InfluxQL query of Grafana's InfluxDB data source (the SDK has no builder for it)."""

    def __init__(self, ref_id: str, query: str, result_format: str) -> None:
        self.ref_id, self.query, self.result_format = ref_id, query, result_format

    def to_json(self) -> dict[str, Any]:
        """The target as Grafana stores it."""
        return {"refId": self.ref_id, "datasource": DATASOURCE.to_json(), "rawQuery": True, "query": self.query,
                "resultFormat": self.result_format}


class InfluxQLBuilder(cogbuilder.Builder[InfluxQL]):
    """Builder wrapper, so the SDK's panels take the query like any other target."""

    def __init__(self, query: str, *, ref_id: str = "A", result_format: str = "time_series") -> None:
        self._internal = InfluxQL(ref_id, query, result_format)

    def build(self) -> InfluxQL:
        """The query."""
        return self._internal


def _variable(name: str, label: str, query: str, regex: str | None = None) -> db.QueryVariable:
    v = (db.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
         .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
    return v.regex(regex) if regex else v


def _process_panel(title: str, where: str, group_by: str = "") -> timeseries.Panel:
    """Mean of every field of the picked measurement per interval; one panel per measurement (repeat)."""
    query = (f'SELECT mean(*) FROM "$measurement" WHERE {where} AND $timeFilter '
             f'GROUP BY time($__interval){group_by} fill(none)')
    return (timeseries.Panel().title(title).datasource(DATASOURCE).with_target(InfluxQLBuilder(query))
            .repeat("measurement").repeat_direction("v").height(10).span(24))


def _events_panel(where: str) -> table.Panel:
    query = (f'SELECT "message", "kind", "severity" FROM "{EVENTS}" WHERE {where} AND $timeFilter '
             'ORDER BY time DESC LIMIT 500')
    return (table.Panel().title("Events: excursions, interlocks, connection losses").datasource(DATASOURCE)
            .with_target(InfluxQLBuilder(query, result_format="table")).height(10).span(24))


def _tags_panel(title: str, query: str) -> table.Panel:
    return (table.Panel().title(title).datasource(DATASOURCE)
            .with_target(InfluxQLBuilder(query, result_format="table")).height(6).span(12))


def _base(uid: str, title: str, description: str) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(["amtrace"]).time("now-24h", "now")
            .timezone("utc").refresh("1m").readonly()
            .with_variable(db.DatasourceVariable("datasource").label("InfluxDB").type("influxdb")))


def device_dashboard() -> db.Dashboard:
    """Everything recorded under one device code: its process data, the machines and jobs, its events."""
    where = "\"device\" = '$device'"
    return (_base("amtrace-device", "amtrace: process data by device code",
                  "Every point recorded under one device code, from build to sterilisation.")
            .with_variable(_variable("device", "Device code", 'SHOW TAG VALUES WITH KEY = "device"'))
            .with_variable(_variable("measurement", "Measurement", f"SHOW MEASUREMENTS WHERE {where}",
                                     PROCESS_MEASUREMENTS))
            .with_panel(_tags_panel("Machines and jobs of $device",
                                    f'SHOW TAG VALUES WITH KEY IN ("machine", "job") WHERE {where}').span(24))
            .with_panel(_process_panel("$measurement of $device", where))
            .with_panel(_events_panel(where)))


def machine_dashboard() -> db.Dashboard:
    """One machine over time: its process data, devices, warnings and alarms."""
    where = "\"machine\" = '$machine'"
    alarms = (f'SELECT count("message") FROM "{EVENTS}" WHERE {where} AND "severity" =~ /^(alarm|warning)$/ '
              'AND $timeFilter GROUP BY "severity"')
    return (_base("amtrace-machine", "amtrace: process data by machine",
                  "One machine's process data with and without a job, its devices and its events.")
            .with_variable(_variable("machine", "Machine", 'SHOW TAG VALUES WITH KEY = "machine"'))
            .with_variable(_variable("measurement", "Measurement", f"SHOW MEASUREMENTS WHERE {where}",
                                     PROCESS_MEASUREMENTS))
            .with_panel(_tags_panel("Warnings and alarms in the time range", alarms))
            .with_panel(_tags_panel("Device codes recorded on $machine",
                                    f'SHOW TAG VALUES WITH KEY = "device" WHERE {where}'))
            .with_panel(_process_panel("$measurement on $machine", where))
            .with_panel(_events_panel(where)))


def job_dashboard() -> db.Dashboard:
    """One job: each device's process data side by side, the job's devices and events."""
    where = "\"job\" = '$job'"
    return (_base("amtrace-job", "amtrace: process data by job",
                  "One job's process data, one series per device code, and its events.")
            .with_variable(_variable("job", "Job", 'SHOW TAG VALUES WITH KEY = "job"'))
            .with_variable(_variable("measurement", "Measurement", f"SHOW MEASUREMENTS WHERE {where}",
                                     PROCESS_MEASUREMENTS))
            .with_panel(_tags_panel("Device codes of job $job", f'SHOW TAG VALUES WITH KEY = "device" WHERE {where}')
                        .span(24))
            .with_panel(_process_panel("$measurement of job $job, by device", where, ', "device"'))
            .with_panel(_events_panel(where)))


DASHBOARDS = {"device": device_dashboard, "machine": machine_dashboard, "job": job_dashboard}


def _flow(board: dm.Dashboard) -> dm.Dashboard:
    """Place panels left to right, wrapping at Grafana's 24 columns (the builder's own placement overflows)."""
    x = y = row_h = 0
    for p in board.panels or []:
        w, h = p.grid_pos.w, p.grid_pos.h
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p.grid_pos = dm.GridPos(h=h, w=w, x=x, y=y)
        x, row_h = x + w, max(row_h, h)
    return board


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {f"amtrace-{name}.json": json.dumps(_flow(make().build()), cls=JSONEncoder, indent=2, sort_keys=True)
            + "\n" for name, make in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or check that the committed ones are current."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"folder to write to (default {OUT})")
    ap.add_argument("--check", action="store_true", help="exit 1 when the files in --out differ from the code")
    args = ap.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date (run deploy/grafana/dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
