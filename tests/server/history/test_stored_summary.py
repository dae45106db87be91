"""Build summaries stored at release (issue #6, DHR speed): a released device's DHR reads the summary computed
once at release, not raw points (it still answers with InfluxDB unreachable, and still shows the release-time
values after its points are deleted, while `dhr verify` reports the deletion); an unreleased device's DHR is
computed live and says so; a stored summary changed in SQL is found by `dhr verify` and never shown; a deferred
seal and a back-fill store the summary later; the migration applies and reverts on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, text

from edge.simulators.profiles import SlaPrint
from edge_feed import NS, feed, machine
from stagekit import STAGES, backdate_job, run_stage, sla_with_resin_excursion
from server.cli import main as server_cli
from server.history import service
from server.timeseries.influx import InfluxQL
from server.models import AuditEntry, BuildSummaryRecord, Device


pytestmark = pytest.mark.timeout(300)

SLA = SlaPrint(layer_count=40)
EXCURSION = (300.0, 320.0)  # resin at 35 °C: above warning 34, below alarm 36
DEAD_INFLUX = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused


@pytest.fixture(scope="module")
def built(plant, app, influxdb, influx_database):
    """Three devices on one SLA build (edge-written data with a resin excursion): `released` released with
    InfluxDB up, `open` only built, `deferred` released while InfluxDB was unreachable."""
    ctx = plant.ready(devices=3)
    released, open_, deferred = (d["device_code"] for d in ctx["job"]["devices"])
    t0 = (int(time.time()) - 2 * 3600) * NS
    # The job was planned before the data was recorded: move its creation back (record set-up, not under test).
    backdate_job(app, ctx["job"]["id"], datetime.fromtimestamp(t0 / NS - 600, tz=timezone.utc))
    assert plant.gate(ctx)["allowed"] is True
    build = sla_with_resin_excursion(SLA, EXCURSION)

    sla = machine("sla-01").model_copy(update={"id": ctx["machine"]["id"]})
    feed(url=influxdb.url, database=influx_database, machine_cfg=sla, job=str(ctx["job"]["id"]),
         devices=[released, open_, deferred], start_ns=t0, seconds=SLA.period_s, step_s=1.0, state=build,
         noise=False)
    for code in (released, open_, deferred):
        run_stage(plant, code, "build")
    for stage in STAGES[1:]:
        run_stage(plant, released, stage)
    for stage in STAGES[1:-1]:
        run_stage(plant, deferred, stage)
    settings = app.state.settings
    good = settings.influx_url
    settings.influx_url = DEAD_INFLUX  # the release hook makes its client from the settings
    try:
        run_stage(plant, deferred, "release")
    finally:
        settings.influx_url = good
    return {"ctx": ctx, "released": released, "open": open_, "deferred": deferred}


def _dhr(plant, code: str) -> dict:
    return plant.call("GET", f"/history/devices/{code}/dhr", "quality_engineer")


def _pdf_text(plant, code: str, tmp_path) -> str:
    r = plant.client.get(f"/api/v1/history/devices/{code}/dhr.pdf", headers=plant.h("quality_engineer"))
    assert r.status_code == 200, r.text
    pdf = tmp_path / f"{code}.pdf"
    pdf.write_bytes(r.content)
    return " ".join(subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())


def _verify(plant, monkeypatch, capsys, code: str) -> tuple[int, str]:
    s = plant.app.state.settings
    for k, v in {"AMTRACE_DATABASE_URL": s.database_url, "AMTRACE_INFLUX_URL": s.influx_url,
                 "AMTRACE_INFLUX_DATABASE": s.influx_database, "AMTRACE_FILE_STORE": s.file_store}.items():
        monkeypatch.setenv(k, v)
    capsys.readouterr()
    rc = server_cli(["dhr", "verify", code])
    return rc, capsys.readouterr().out


def _row(app, code: str) -> BuildSummaryRecord | None:
    with app.state.sessionmaker() as s:
        return s.scalar(select(BuildSummaryRecord).join(Device, Device.id == BuildSummaryRecord.device_id)
                        .where(Device.device_code == code))


def _signal(d: dict, name: str) -> dict:
    return {s["signal"]: s for s in d["process_monitoring"]["signals"]}[name]


@pytest.fixture
def influx_down(app):
    """The app's InfluxDB client pointed at a port where nothing listens, for one test."""
    saved = getattr(app.state, "influxql", None)
    app.state.influxql = InfluxQL(url=DEAD_INFLUX, database="none", timeout_s=5)
    yield
    app.state.influxql.close()
    app.state.influxql = saved


def test_release_stores_the_summary_the_live_queries_give(plant, app, built):
    code = built["released"]
    row = _row(app, code)
    assert row is not None and len(row.summary_sha256) == 64
    with app.state.sessionmaker() as s:
        entry = s.get(AuditEntry, row.audit_seq)
        assert entry.action == "build_summary_stored" and entry.record_id == code
        assert json.loads(entry.new_values)["summary_sha256"] == row.summary_sha256
        # Stored at release = what the live InfluxQL summary gives now (the data has not changed since).
        influx = InfluxQL.from_settings(app.state.settings)
        live = service.build_summary(s, influx, device_code=code, plots=True)
        influx.close()
    d = _dhr(plant, code)
    pm = d["process_monitoring"]
    assert pm["source"] == "stored at release" and pm["summary_sha256"] == row.summary_sha256
    assert pm["computed_at"] and pm["note"] is None
    assert pm["signals"] == live.model_dump(mode="json")["signals"]
    assert pm["events"] == live.model_dump(mode="json")["events"]
    assert pm["plots"] == live.model_dump(mode="json")["plots"] and pm["plots"][0]["values"]
    assert 0 < len(pm["plots"][0]["values"]) <= service.MAX_PLOT_POINTS
    resin = _signal(d, "resin_temp_c")
    assert resin["max"] == 35.0 and resin["samples_outside_warning"] == 20
    b = plant.call("GET", f"/history/devices/{code}/build", "quality_engineer")
    assert b["source"] == "stored at release" and b["plots"] == [] and b["signals"] == pm["signals"]


def test_unreleased_device_dhr_is_live(plant, app, built, tmp_path):
    code = built["open"]
    assert _row(app, code) is None
    d = _dhr(plant, code)
    pm = d["process_monitoring"]
    assert pm["source"] == "live" and pm["summary_sha256"] is None and pm["computed_at"] is None
    assert pm["note"] is None
    assert _signal(d, "resin_temp_c")["max"] == 35.0
    assert plant.call("GET", f"/history/devices/{code}/build", "quality_engineer")["source"] == "live"
    assert "Summary LIVE: computed from InfluxDB for this document; provisional" in _pdf_text(plant, code, tmp_path)


def test_released_dhr_needs_no_influxdb(plant, built, influx_down, tmp_path):
    # Nothing listens where the app's InfluxDB client points: only a DHR that reads no points can answer.
    d = _dhr(plant, built["released"])
    assert d["process_monitoring"]["source"] == "stored at release"
    assert _signal(d, "resin_temp_c")["max"] == 35.0
    flat = _pdf_text(plant, built["released"], tmp_path)
    assert "Summary stored at release" in flat and "resin_temp_c" in flat
    r = plant.client.get(f"/api/v1/history/devices/{built['open']}/dhr", headers=plant.h("quality_engineer"))
    assert r.status_code == 503 and r.json()["code"] == "timeseries_unavailable"


def test_deferred_seal_is_live_until_dhr_seal_stores_it(plant, app, built, monkeypatch, capsys):
    code = built["deferred"]
    with app.state.sessionmaker() as s:
        actions = list(s.scalars(select(AuditEntry.action).where(AuditEntry.record_id == code)
                                 .order_by(AuditEntry.seq.desc()).limit(2)))
        # The release's last two entries, in the order its subscribers were imported.
        assert sorted(actions) == ["device_seal_deferred", "retention_set"]
    assert _row(app, code) is None
    pm = _dhr(plant, code)["process_monitoring"]
    assert pm["source"] == "live" and "no stored summary for this released device" in pm["note"]
    _verify(plant, monkeypatch, capsys, code)  # sets the environment for the CLI
    assert server_cli(["dhr", "seal", code]) == 0
    assert "build summary stored" in capsys.readouterr().out
    assert _dhr(plant, code)["process_monitoring"]["source"] == "stored at release"
    rc, out = _verify(plant, monkeypatch, capsys, code)
    assert rc == 0 and "stored build summary intact" in out


def test_stored_summary_changed_in_sql_is_found_and_not_shown(plant, app, built, monkeypatch, capsys):
    code = built["released"]
    rc, out = _verify(plant, monkeypatch, capsys, code)
    assert rc == 0 and "stored build summary intact" in out
    row = _row(app, code)
    original, original_sha = row.summary, row.summary_sha256
    assert '"max":35.0' in original
    forged = original.replace('"max":35.0', '"max":33.0')
    try:
        # 1. The text changed, its hash not: the row contradicts itself.
        with app.state.sessionmaker() as s, s.begin():
            s.execute(text("UPDATE build_summaries SET summary = :t WHERE id = :id"), {"t": forged, "id": row.id})
        rc, out = _verify(plant, monkeypatch, capsys, code)
        assert rc == 1 and "CHANGED SINCE RELEASE" in out
        assert "stored build summary changed: its text no longer matches its SHA-256" in out
        pm = _dhr(plant, code)["process_monitoring"]
        # The DHR never shows a summary that fails its check: it computes it live and says why.
        assert pm["source"] == "live" and "failed its check" in pm["note"]
        assert {s["signal"]: s for s in pm["signals"]}["resin_temp_c"]["max"] == 35.0
        # 2. Text and hash changed together: the HMAC-chained audit entry still holds the release-time hash.
        import hashlib
        with app.state.sessionmaker() as s, s.begin():
            s.execute(text("UPDATE build_summaries SET summary_sha256 = :h WHERE id = :id"),
                      {"h": hashlib.sha256(forged.encode()).hexdigest(), "id": row.id})
        rc, out = _verify(plant, monkeypatch, capsys, code)
        assert rc == 1 and f"its SHA-256 differs from the one in audit entry {row.audit_seq}" in out
        assert _dhr(plant, code)["process_monitoring"]["source"] == "live"
    finally:
        with app.state.sessionmaker() as s, s.begin():
            s.execute(text("UPDATE build_summaries SET summary = :t, summary_sha256 = :h WHERE id = :id"),
                      {"t": original, "h": original_sha, "id": row.id})
    assert _verify(plant, monkeypatch, capsys, code)[0] == 0


def test_summarize_back_fills_a_device_sealed_without_summary(plant, app, built, monkeypatch, capsys):
    code = built["released"]
    _verify(plant, monkeypatch, capsys, code)  # sets the environment for the CLI
    assert server_cli(["dhr", "summarize", code]) == 1  # it has one: stored summaries are never replaced
    assert "not a sealed device without a stored summary" in capsys.readouterr().err
    # A device released before this version: sealed, no stored summary (test set-up of the records).
    with app.state.sessionmaker() as s, s.begin():
        s.execute(text("DELETE FROM build_summaries WHERE id = :id"), {"id": _row(app, code).id})
    assert "no stored summary" in _dhr(plant, code)["process_monitoring"]["note"]
    rc, out = _verify(plant, monkeypatch, capsys, code)
    assert rc == 0 and "no stored build summary" in out
    assert server_cli(["dhr", "summarize", "--all"]) == 0
    assert f"device {code}: summary stored" in capsys.readouterr().out
    assert _dhr(plant, code)["process_monitoring"]["source"] == "stored at release"


def test_released_dhr_keeps_the_release_time_summary_after_points_are_deleted(
        plant, app, built, influxdb, influx_database, monkeypatch, capsys, tmp_path):
    code = built["released"]
    before = _dhr(plant, code)["process_monitoring"]
    resin = {s["signal"]: s for s in before["signals"]}["resin_temp_c"]
    assert resin["samples"] > 100
    influxdb.query(f"DELETE FROM print_process WHERE device = '{code}'", influx_database)
    with app.state.sessionmaker() as s:  # the points are really gone: a live summary now finds none
        influx = InfluxQL.from_settings(app.state.settings)
        live = service.build_summary(s, influx, device_code=code)
        influx.close()
    assert {x.signal: x for x in live.signals}["resin_temp_c"].samples == 0
    after = _dhr(plant, code)["process_monitoring"]
    assert after["source"] == "stored at release"
    assert after["signals"] == before["signals"] and after["plots"] == before["plots"]
    assert after["events"] == before["events"]
    assert "Summary stored at release" in _pdf_text(plant, code, tmp_path)
    rc, out = _verify(plant, monkeypatch, capsys, code)
    # The device's archive holds the sealed points: points gone from InfluxDB are expiry, not tampering.
    assert rc == 0 and "expired / missing in InfluxDB, archive intact (print_process: " in out, out
    assert "stored build summary intact" in out  # the summary itself was not changed: the time series were
    # Without the archive (its folder moved away) the deletion can only be named against the sealed manifest, and
    # the missing archive is a problem of its own.
    archives = Path(app.state.settings.file_store) / "archives" / code
    archives.rename(archives.with_name(code + ".away"))
    try:
        rc, out = _verify(plant, monkeypatch, capsys, code)
    finally:
        archives.with_name(code + ".away").rename(archives)
    assert rc == 1 and "CHANGED SINCE RELEASE" in out and "point deleted: print_process at" in out
    assert "archive file manifest.json missing" in out


def test_release_reads_influxdb_without_holding_up_writers(plant, app, monkeypatch):
    """Sealing reads every point of the build (tens of seconds at 10 Hz); meanwhile other writers, such as
    agents' heartbeats and gate decisions, must not wait: the read happens before the write transaction."""
    from server.history import seal

    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    assert plant.gate(ctx)["allowed"] is True
    for stage in STAGES[:-1]:
        run_stage(plant, code, stage)
    real, wrote, done_while_reading = seal.series_digest, [], []

    def digest_while_an_agent_writes(*args, **kwargs):
        def heartbeat():
            with app.state.sessionmaker() as s, s.begin():
                s.execute(text("UPDATE machines SET last_heartbeat_at = :at WHERE id = :id"),
                          {"at": datetime.now(timezone.utc), "id": ctx["machine"]["id"]})
            wrote.append(True)

        writer = threading.Thread(target=heartbeat, daemon=True)
        writer.start()
        writer.join(timeout=10)  # a write lock held by the release would keep it waiting 30 s
        done_while_reading.append(bool(wrote))
        return real(*args, **kwargs)

    monkeypatch.setattr(seal, "series_digest", digest_while_an_agent_writes)
    run_stage(plant, code, "release")
    assert done_while_reading == [True]
    assert _row(app, code) is not None and _dhr(plant, code)["seal"]["point_count"] == 0  # no data was fed


def test_migration_0005_applies_and_reverts(database_url, tmp_path, request):
    from alembic import command
    from alembic.config import Config

    from server.db import MIGRATIONS, migrate

    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/fresh.db"
    else:
        pg = request.getfixturevalue("postgres")
        name = f"amtrace_mig_{uuid.uuid4().hex[:8]}"
        pg.create_database(name)
        url = pg.dsn(name)

    def tables() -> set[str]:
        engine = create_engine(url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    migrate(url, "0004_kiosk_badge")
    assert "build_summaries" not in tables() and "device_seals" in tables()
    migrate(url, "head")
    assert "build_summaries" in tables()
    engine = create_engine(url)
    cols = {c["name"] for c in inspect(engine).get_columns("build_summaries")}
    uniques = inspect(engine).get_unique_constraints("build_summaries")
    engine.dispose()
    assert cols == {"id", "device_id", "computed_at", "range_start", "range_end", "summary", "summary_sha256",
                    "audit_seq"}
    assert any(u["column_names"] == ["device_id"] for u in uniques)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.downgrade(cfg, "0004_kiosk_badge")
    assert "build_summaries" not in tables() and "device_seals" in tables()
