"""InfluxDB's retention against the horizon a device's data must survive, read from a real InfluxDB: a 30-day
database is a warning in /readyz (serving goes on), an infinite one is not, an unreachable one says so."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from server.app import create_app
from server.db import migrate
from server.settings import Settings
from server.timeseries.influx import InfluxQL
from server.timeseries.retention import duration_s, retention_warning
from waiting import wait_until


@pytest.mark.parametrize(("text", "seconds"), [("720h0m0s", 30 * 86400), ("0s", float("inf")), ("1h30m", 5400),
                                               ("2w", 14 * 86400)])
def test_durations_as_influxdb_writes_them(text, seconds):
    assert duration_s(text) == seconds


def test_retention_shorter_than_the_horizon_is_said_and_infinite_is_fine(influxdb):
    influxdb.query('CREATE DATABASE "short_keep" WITH DURATION 30d NAME "month"')
    influxdb.create_database("forever")
    with InfluxQL(url=influxdb.url, database="short_keep") as q:
        warning = retention_warning(q, min_days=730)
    assert warning == ("InfluxDB database short_keep keeps points 30 days (retention policy month), less than the "
                       "730 days a device's data must survive before it is archived at release "
                       "(AMTRACE_INFLUX_MIN_RETENTION_DAYS): extend the retention")
    with InfluxQL(url=influxdb.url, database="short_keep") as q:
        assert retention_warning(q, min_days=20) is None
    with InfluxQL(url=influxdb.url, database="forever") as q:
        assert retention_warning(q, min_days=36500) is None
    with InfluxQL(url="http://127.0.0.1:9", database="forever", timeout_s=2) as q:
        assert retention_warning(q, min_days=730).startswith("InfluxDB retention not checked: InfluxDB at "
                                                             "http://127.0.0.1:9 could not be reached")


def test_readyz_carries_the_warning_and_stays_ready(influxdb, tmp_path):
    influxdb.query('CREATE DATABASE "short_ready" WITH DURATION 7d NAME "week"')
    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", environment="development",
                        file_store=str(tmp_path / "files"), influx_url=influxdb.url, influx_database="short_ready")
    migrate(settings.database_url)
    app = create_app(settings)
    with TestClient(app) as c:
        body = wait_until(lambda: (r := c.get("/readyz").json())["warnings"] and r, 30, "the retention warning")
        assert body["status"] == "ready" and "keeps points 7 days" in body["warnings"][0]
    app.state.engine.dispose()
