"""The self-contained device archive written at release (issue 19): every file hash-checked and read-only; `dhr
verify` tells points expired or missing in InfluxDB (archive intact) from points changed, and names a changed
archive file; after InfluxDB's database is dropped the DHR is the same and the points export from the archive as
line protocol that, written into a fresh InfluxDB database, hashes to the seal again."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from madekit import make_device
from stagekit import run_server_cli
from server.archive.store import DirectoryStore
from server.errors import Conflict
from server.history.seal import series_digest
from server.models import AuditEntry, DeviceArchive, DeviceSeal
from server.timeseries.influx import InfluxQL

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def made(plant, app, influxdb, influx_database):
    """A guide made end to end (build, washer and sterilizer cycles) and released; its DHR as released."""
    out = make_device(plant, app, influxdb, influx_database)
    out["dhr"] = plant.call("GET", f"/history/devices/{out['code']}/dhr", "quality_engineer")
    return out


def _archive_dir(app, code: str) -> Path:
    with app.state.sessionmaker() as s:
        row = s.scalar(select(DeviceArchive).where(DeviceArchive.device_id == _device_id(s, code)))
    return Path(app.state.settings.file_store) / "archives" / code / row.archive_id


def _device_id(session, code: str) -> int:
    from server.models import Device
    return session.scalar(select(Device.id).where(Device.device_code == code))


def test_release_writes_a_read_only_archive_whose_manifest_the_audit_chain_holds(plant, app, made):
    code, d = made["code"], made["dhr"]
    assert d["archive"]["state"] == "written" and d["archive"]["problems"] == []
    folder = _archive_dir(app, code)
    manifest = json.loads((folder / "manifest.json").read_bytes())
    names = set(manifest["files"])
    assert {"series.txt.gz", "schema.json", "machine-windows.json", "dhr.json", "dhr.pdf", "audit.jsonl",
            "signatures.json", "design/" + made["ctx"]["iteration"]["files"][0]["file_name"]} <= names
    for name, meta in manifest["files"].items():
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], name
        assert not os.stat(folder / name).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), name
    # The series file is the sealed text itself: its SHA-256 is the seal's.
    text = gzip.decompress((folder / "series.txt.gz").read_bytes())
    assert hashlib.sha256(text).hexdigest() == d["seal"]["series_sha256"]
    assert len(text.split(b"\n")) == d["seal"]["point_count"]
    # The machine windows: the build and both cycles, each on its machine.
    windows = json.loads((folder / "machine-windows.json").read_bytes())
    assert [w["name"].split()[0] for w in windows] == ["build", "cycle", "cycle"]
    assert windows[1]["machine_id"].startswith("washer-") and windows[2]["machine_id"].startswith("sterilizer-")
    # The archived record is the released one, and says it is the archive.
    archived = json.loads((folder / "dhr.json").read_bytes())
    assert archived["seal"] == d["seal"] and archived["archive"]["state"] == "written"
    actions = [json.loads(x)["action"] for x in (folder / "audit.jsonl").read_text().splitlines()]
    assert actions.count("device_sealed") == 1 and actions.count("job_created") == 1  # the device's and its job's
    with app.state.sessionmaker() as s:
        row = s.scalar(select(DeviceArchive).where(DeviceArchive.device_id == _device_id(s, code)))
        entry = s.get(AuditEntry, row.audit_seq)
        assert entry.action == "device_archived" and json.loads(entry.new_values)["manifest_sha256"] == \
            hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    # Over the API, for a quality engineer only, every file hash-checked.
    a = plant.call("GET", f"/history/devices/{code}/archive", "quality_engineer")
    assert a["intact"] is True and a["manifest"]["files"].keys() == manifest["files"].keys()
    r = plant.client.get(f"/api/v1/history/devices/{code}/archive/files/dhr.pdf", headers=plant.h("quality_engineer"))
    assert r.status_code == 200 and r.content == (folder / "dhr.pdf").read_bytes()
    assert plant.client.get(f"/api/v1/history/devices/{code}/archive/files/dhr.pdf",
                            headers=plant.h("operator")).status_code == 403
    assert plant.client.get(f"/api/v1/history/devices/{code}/archive/files/../../x",
                            headers=plant.h("quality_engineer")).status_code == 404
    # The cycles the device went through are kept as long as it is (their records are in the archive too).
    cycle = d["cycles"][1]["cycle_id"]
    r = plant.client.delete(f"/api/v1/retention/records/cycle/{cycle}", headers=plant.h("admin"))
    assert r.status_code == 409 and f"cycle {cycle} is under retention until {d['retention']['retain_until']}" in \
        r.json()["detail"], r.text
    with pytest.raises(Conflict, match="written once"):  # write-once: an existing key is never replaced
        DirectoryStore(folder.parent.parent).put(f"{code}/{folder.name}/dhr.pdf", b"%PDF-forged")


def test_one_byte_changed_in_the_archive_fails_verify_naming_the_file(plant, app, made, monkeypatch, capsys):
    code = made["code"]
    rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "verify", code)
    assert rc == 0 and "source: InfluxDB (the archive holds the same points)" in out and "intact" in out
    pdf = _archive_dir(app, code) / "dhr.pdf"
    good = pdf.read_bytes()
    os.chmod(pdf, 0o644)
    try:
        pdf.write_bytes(good[:500] + bytes([good[500] ^ 1]) + good[501:])
        rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "verify", code)
        assert rc == 1 and "archive file dhr.pdf changed" in out, out
        assert plant.call("GET", f"/history/devices/{code}/dhr", "quality_engineer")["archive"]["state"] == "written"
    finally:
        pdf.write_bytes(good)
        os.chmod(pdf, 0o444)
    assert run_server_cli(plant, monkeypatch, capsys, "dhr", "verify", code)[0] == 0


def test_a_changed_manifest_fails_audit_verify_too(plant, app, made, monkeypatch, capsys):
    manifest = _archive_dir(app, made["code"]) / "manifest.json"
    good = manifest.read_bytes()
    os.chmod(manifest, 0o644)
    try:
        manifest.write_bytes(good.replace(b'"dhr.pdf"', b'"dhr.pdg"'))
        rc, out = run_server_cli(plant, monkeypatch, capsys, "audit", "verify")
        assert rc == 1 and f"archive manifest of device {made['code']}" in out, out
        rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "verify", made["code"])
        assert rc == 1 and "archive file manifest.json changed" in out
    finally:
        manifest.write_bytes(good)
        os.chmod(manifest, 0o444)
    assert run_server_cli(plant, monkeypatch, capsys, "audit", "verify")[0] == 0


def test_points_deleted_from_influxdb_are_expired_not_tampering(plant, made, influxdb, influx_database, monkeypatch,
                                                                 capsys):
    code = made["code"]
    influxdb.query(f"DELETE FROM cleaning WHERE device = '{code}'", influx_database)
    rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "verify", code)
    assert rc == 0, out
    assert "expired / missing in InfluxDB, archive intact (cleaning: " in out
    assert "source: archive" in out and "CHANGED" not in out


def test_dropped_influxdb_leaves_the_dhr_whole_and_the_points_exportable(plant, app, made, influxdb,
                                                                         influx_database, monkeypatch, capsys,
                                                                         tmp_path):
    code, before = made["code"], made["dhr"]
    influxdb.query(f"DROP DATABASE {influx_database}", influx_database)
    after = plant.call("GET", f"/history/devices/{code}/dhr", "quality_engineer")
    assert after["seal"] == before["seal"] and after["archive"]["state"] == "written"
    for section in ("process_monitoring", "cycles", "unrecorded_process_data", "nonconformities"):
        assert after[section] == before[section], section
    assert [(c["process"], c["verdict"]) for c in after["cycles"]] == [("cleaning", "pass"), ("steam", "pass")]
    rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "verify", code)
    assert rc == 0, out
    assert "source: archive" in out and "archive intact" in out
    # Full resolution from the archive, as line protocol: written into a fresh InfluxDB database it hashes to the
    # seal again (tags, field types and values all came back exactly).
    lp = tmp_path / "points.lp"
    rc, _ = run_server_cli(plant, monkeypatch, capsys, "dhr", "export", code, "-o", str(lp))
    assert rc == 0 and len(lp.read_text().splitlines()) == before["seal"]["point_count"]
    fresh = influx_database + "_restored"
    influxdb.create_database(fresh)
    urllib.request.urlopen(f"{influxdb.url}/write?db={fresh}&precision=ns", data=lp.read_bytes()).read()  # noqa: S310
    with InfluxQL(url=influxdb.url, database=fresh, timeout_s=30) as influx, app.state.sessionmaker() as s:
        seal = s.scalar(select(DeviceSeal).where(DeviceSeal.device_id == _device_id(s, code)))
        again = series_digest(influx, device_code=code, start=seal.range_start, end=seal.range_end)
    assert again.sha256 == seal.series_sha256 and again.points == seal.point_count
    assert run_server_cli(plant, monkeypatch, capsys, "audit", "verify")[0] == 0


def _missing_gauge(plant) -> float:
    text = plant.client.get("/metrics", headers=plant.h("admin")).text
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("amtrace_device_archives_missing ")))


def test_a_release_whose_archive_fails_stands_says_so_and_is_archived_later(plant, app, made, influxdb,
                                                                            influx_database, monkeypatch, capsys,
                                                                            tmp_path):
    """A real fault: the archive folder cannot be created (a file stands where it should be)."""
    from stagekit import STAGES, run_stage

    influxdb.create_database(influx_database)  # dropped by the test before: this device is made with InfluxDB up

    ctx = plant.ready(devices=1)
    code = ctx["job"]["devices"][0]["device_code"]
    assert plant.gate(ctx)["allowed"] is True
    for stage in STAGES[:-1]:
        run_stage(plant, code, stage)
    assert _missing_gauge(plant) == 0
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive folder should be")
    settings = app.state.settings
    monkeypatch.setattr(settings, "archive_dir", str(blocker / "archives"))
    run_stage(plant, code, "release")  # the release is answered and stands
    d = plant.call("GET", f"/history/devices/{code}/dhr", "quality_engineer")
    assert d["device"]["status"] == "released" and d["seal"] is not None
    assert d["archive"]["state"] == "missing" and f"dhr archive {code}" in d["archive"]["full_resolution"]
    assert _missing_gauge(plant) == 1
    rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "verify", code)
    assert rc == 0 and f"no archive written for {code}" in out
    monkeypatch.setenv("AMTRACE_ARCHIVE_DIR", str(blocker / "archives"))  # still blocked: the CLI says so, exit 1
    rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "archive", "--pending")
    assert rc == 1 and "0 device(s) archived, 1 failed" in out and f"{code}: NotADirectoryError" in out, out
    monkeypatch.delenv("AMTRACE_ARCHIVE_DIR")
    monkeypatch.setattr(settings, "archive_dir", None)
    rc, out = run_server_cli(plant, monkeypatch, capsys, "dhr", "archive", "--pending")
    assert rc == 0 and "1 device(s) archived, 0 failed" in out, out
    assert plant.call("GET", f"/history/devices/{code}/dhr", "quality_engineer")["archive"]["state"] == "written"
    assert _missing_gauge(plant) == 0
