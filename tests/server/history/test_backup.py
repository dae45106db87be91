"""Backup, restore and backup verify on SQLite and PostgreSQL with a real InfluxDB: a backup taken while gate
decisions keep arriving restores into a chain that verifies; a quiet backup restores into a fresh database with the
same row counts; `backup verify` restores into a scratch database and checks the audit trail and every sealed
device, and names a changed byte; restore refuses a database or file store that is not empty."""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, inspect, select, table

from edge.simulators.profiles import SlaPrint
from edge_feed import NS, feed, machine
from stagekit import STAGES, backdate_job, run_stage, sla_with_resin_excursion
from server.cli import main as server_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from linkkit import server_url  # noqa: E402,F401 - the module's app over real HTTP

pytestmark = pytest.mark.timeout(300)
SLA = SlaPrint(layer_count=20)


@pytest.fixture(scope="module")
def sealed(plant, app, influxdb, influx_database):
    """One device built (edge-written data in InfluxDB), walked through every stage, released and sealed."""
    ctx = plant.ready(devices=1)
    code = ctx["job"]["devices"][0]["device_code"]
    t0 = (int(time.time()) - 2 * 3600) * NS
    backdate_job(app, ctx["job"]["id"], datetime.fromtimestamp(t0 / NS - 600, tz=timezone.utc))
    assert plant.gate(ctx)["allowed"] is True
    sla = machine("sla-01").model_copy(update={"id": ctx["machine"]["id"]})
    feed(url=influxdb.url, database=influx_database, machine_cfg=sla, job=str(ctx["job"]["id"]), devices=[code],
         start_ns=t0, seconds=SLA.period_s, step_s=1.0, state=sla_with_resin_excursion(SLA, (100.0, 110.0)),
         noise=False)
    for stage in STAGES:
        run_stage(plant, code, stage)
    return code


def test_a_released_device_is_kept_by_its_product_familys_rule_named_in_the_dhr(plant, app, sealed, tmp_path):
    """The release gave the device its retention date (the default rule here: 30 + 2 years), said in the DHR JSON,
    its PDF and the audit trail; a family's own rule applies to the next release."""
    from server.retention.service import add_years

    dhr = plant.call("GET", f"/history/devices/{sealed}/dhr", "quality_engineer")
    released = date.fromisoformat(dhr["retention"]["retain_until"])
    entries = plant.call("GET", "/audit/entries", "quality_engineer",
                         params={"record_type": "device", "record_id": sealed, "limit": 1000})
    [setting] = [e for e in entries if e["action"] == "retention_set"]
    assert dhr["retention"]["rule"] == "default rule" and (dhr["retention"]["lifetime_years"],
                                                          dhr["retention"]["extra_years"]) == (30.0, 2.0)
    release_day = datetime.fromisoformat(setting["at"].replace("Z", "+00:00")).date()
    assert released == add_years(release_day, 32)
    assert "ISO 13485:2016 §4.2.5" in dhr["retention"]["basis"]
    pdf = plant.client.get(f"/api/v1/history/devices/{sealed}/dhr.pdf", headers=plant.h("quality_engineer"))
    assert pdf.status_code == 200
    import pypdfium2
    text = "".join(p.get_textpage().get_text_range() for p in pypdfium2.PdfDocument(pdf.content))
    assert f"Records kept until {released}" in text
    # A family's own rule is taken over the default (what the next release of that family gets).
    from server.retention.service import rule_for
    from server.settings import RetentionRule
    family = dhr["design"]["product_family"]
    app.state.settings.retention_families = {family: RetentionRule(lifetime_years=0.5)}
    try:
        with app.state.sessionmaker() as session:
            assert rule_for(session, family) == (RetentionRule(lifetime_years=0.5), f"product family {family}")
    finally:
        app.state.settings.retention_families = {}


def _env(monkeypatch, settings, *, database_url: str | None = None, file_store: str | None = None) -> None:
    for k, v in {"AMTRACE_DATABASE_URL": database_url or settings.database_url,
                 "AMTRACE_FILE_STORE": file_store or settings.file_store, "AMTRACE_INFLUX_URL": settings.influx_url,
                 "AMTRACE_INFLUX_DATABASE": settings.influx_database}.items():
        monkeypatch.setenv(k, v)


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = server_cli(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _row_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            return {t: c.scalar(select(func.count()).select_from(table(t)))
                    for t in sorted(inspect(engine).get_table_names())}
    finally:
        engine.dispose()


def _fresh_database(request, tmp_path: Path, url: str) -> str:
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'restored.sqlite'}"
    pg = request.getfixturevalue("postgres")
    name = f"amtrace_restore_{uuid.uuid4().hex[:8]}"
    pg.create_database(name)
    return pg.dsn(name)


def test_backup_under_load_restores_verifies_and_names_a_changed_byte(
        plant, app, sealed, server_url, monkeypatch, capsys, tmp_path, request):  # noqa: F811
    settings = app.state.settings
    _env(monkeypatch, settings)
    assert _cli(capsys, "audit", "anchor")[0] == 0  # an anchor outside the database, as the daily timer writes
    ctx = plant.ready(devices=1)
    plant.identify(ctx)
    body = {"machine_id": ctx["machine"]["id"], "job_id": ctx["job"]["id"], "build_file_sha256": ctx["sha"],
            "operator_id": plant.uid("operator")}
    answered, stop = [], threading.Event()

    def gate_load() -> None:
        with httpx.Client(base_url=server_url, timeout=30) as c:
            while not stop.is_set():
                r = c.post("/api/v1/gate/decisions", headers=ctx["machine"]["agent"], json=body)
                assert r.status_code == 200, r.text
                answered.append(r.json()["decision_id"])

    beats: list[int] = []

    def agent_stream() -> None:
        """The machine's agent reporting its live state as it streams (its heartbeats write the database)."""
        with httpx.Client(base_url=server_url, timeout=30) as c:
            layer = 0
            while not stop.is_set():
                layer += 1
                r = c.post("/api/v1/agents/heartbeat", headers=ctx["machine"]["agent"], json={"status": {"machines": {
                    ctx["machine"]["id"]: {"connected": True, "state": "building", "phase": "PRINTING", "job": None,
                                           "layer": layer, "layers_total": 10_000, "software_revision": "4.2.1",
                                           "alerts": [], "updated_ns": time.time_ns()}}}})
                assert r.status_code == 200, r.text
                beats.append(layer)
                time.sleep(0.02)

    loads = [threading.Thread(target=gate_load), threading.Thread(target=agent_stream)]
    for t in loads:
        t.start()
    try:
        while len(answered) < 20 or len(beats) < 5:
            time.sleep(0.05)
        before, beats_before = len(answered), len(beats)
        rc, out, err = _cli(capsys, "backup", str(tmp_path / "busy"))
        during, beats_during = len(answered) - before, len(beats) - beats_before
    finally:
        stop.set()
        for t in loads:
            t.join(30)
    assert rc == 0, err
    assert "database:" in err and "backup written to" in err  # progress on stderr, the folder on stdout
    assert during > 0, "gate decisions must keep being answered while the backup runs"
    assert beats_during > 0, "the agent's heartbeats must keep being answered while the backup runs"

    # Verify: manifest, restore into a scratch database, audit verify, dhr verify of the sealed device.
    rc, out, err = _cli(capsys, "backup", "verify", str(tmp_path / "busy"))
    assert rc == 0, out + err
    assert "1 sealed device(s) intact" in out and "audit trail intact" in out

    # One byte changed in a stored file of the backup: named, exit 1.
    shutil.copytree(tmp_path / "busy", tmp_path / "changed")
    victim = next(p for p in sorted((tmp_path / "changed" / "files").rglob("*")) if p.is_file())
    victim.chmod(0o600)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    rc, out, err = _cli(capsys, "backup", "verify", str(tmp_path / "changed"))
    rel = victim.relative_to(tmp_path / "changed").as_posix()
    assert rc == 1 and f"{rel}: SHA-256 differs from the manifest" in out, out + err

    # A quiet backup restores into a fresh database and store with the same row count in every table.
    rc, _, err = _cli(capsys, "backup", str(tmp_path / "quiet"))
    assert rc == 0, err
    live = _row_counts(settings.database_url)
    fresh = _fresh_database(request, tmp_path, settings.database_url)
    _env(monkeypatch, settings, database_url=fresh, file_store=str(tmp_path / "restored-files"))
    rc, out, err = _cli(capsys, "restore", str(tmp_path / "quiet"))
    assert rc == 0, err
    assert _row_counts(fresh) == live
    assert _cli(capsys, "audit", "verify", "--no-record")[0] == 0
    rc, out, _ = _cli(capsys, "dhr", "verify", sealed)
    assert rc == 0 and "sealed record intact" in out, out
    # Never into records that exist.
    rc, _, err = _cli(capsys, "restore", str(tmp_path / "quiet"))
    assert rc == 1 and ("restore goes into an empty database only" in err or "restore goes into a new" in err), err


def test_nightly_backups_into_a_folder_keep_the_newest_and_verify_the_latest(app, monkeypatch, capsys, tmp_path):
    _env(monkeypatch, app.state.settings)
    made = []
    for _ in range(3):
        rc, out, err = _cli(capsys, "backup", "create", "--into", str(tmp_path / "nightly"), "--keep", "2")
        assert rc == 0, err
        made.append(Path(out.strip()))
        time.sleep(1.05)  # folders are named by the second
    assert sorted(p for p in (tmp_path / "nightly").iterdir()) == made[1:]  # the oldest removed
    rc, out, _ = _cli(capsys, "backup", "verify", "--latest", str(tmp_path / "nightly"))
    assert rc == 0 and f"backup {made[-1]} verified" in out, out
    assert _cli(capsys, "backup", "create")[0] == 2  # neither DEST nor --into: said, not guessed
