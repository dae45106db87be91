"""Plots keep every excursion: a single alarm sample among 100,000 is in the plotted envelope and marked, on the
real InfluxDB (issue 13: O2 reached 1,031 ppm but the plotted mean topped out at 362, under both limit lines)."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx

from server.history.pdf import _plot
from server.history.service import plot_series
from server.timeseries.influx import InfluxQL

T0 = 1_796_371_200 * 10**9  # 2026-12-04T00:00:00Z
STEP = 100_000_000  # 10 Hz
N = 100_000
SPIKE_AT = 61_234
LIMITS = {"warn_high": 500.0, "alarm_high": 1000.0}


def _write(influxdb, db: str) -> None:
    lines = []
    for i in range(N):
        o2 = 1031.0 if i == SPIKE_AT else 150.0 + (i % 50)
        lines.append(f"lpbf_process,machine=lpbf-x,device=DEV-SPIKE chamber_o2_ppm={o2} {T0 + i * STEP}")
    for chunk in range(0, N, 20_000):
        r = httpx.post(f"{influxdb.url}/write", params={"db": db, "precision": "ns"},
                       content="\n".join(lines[chunk:chunk + 20_000]).encode(), timeout=60)
        assert r.status_code == 204, r.text


def test_one_alarm_sample_among_100000_is_plotted_and_marked(influxdb):
    influxdb.create_database("plot_extremes")
    _write(influxdb, "plot_extremes")
    start = datetime.fromtimestamp(T0 / 1e9, tz=timezone.utc)
    end = datetime.fromtimestamp((T0 + N * STEP) / 1e9, tz=timezone.utc)
    client = InfluxQL(url=influxdb.url, database="plot_extremes")
    try:
        (series,) = plot_series(client, machine_id="lpbf-x", device_code="DEV-SPIKE", start=start, end=end,
                                fields=[("lpbf_process", "chamber_o2_ppm", "chamber O2", "ppm", LIMITS)])
    finally:
        client.close()
    assert 100 < len(series.times_ns) <= 400  # downsampled for the page and the PDF
    assert max(series.values) < 500  # the mean alone hides the spike …
    assert max(series.highs) == 1031.0  # … the envelope does not
    assert min(series.lows) == 150.0
    spike_ns = T0 + SPIKE_AT * STEP
    alarms = [e for e in series.excursions if e.severity == "alarm"]
    assert len(alarms) == 1 and alarms[0].extreme == 1031.0 and alarms[0].limit == 1000.0
    assert alarms[0].start_ns <= spike_ns < alarms[0].end_ns
    warnings = [e for e in series.excursions if e.severity == "warning"]
    assert len(warnings) == 1 and warnings[0].start_ns <= spike_ns < warnings[0].end_ns
    # The PDF draws the same series (envelope and the marked stretch) without error.
    assert _plot([series], "spike") is not None
