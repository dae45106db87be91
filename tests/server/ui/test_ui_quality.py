"""Quality engineer pages in Chromium against the real server and a real InfluxDB 1.x with simulated process
data: search a device, open its device history record with plots, download the PDF; verify the audit chain."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import httpx
import pytest
from uikit import UiServer, screenshot
from playwright.sync_api import expect

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def influx_db(influxdb):
    """A database of its own on the session's InfluxDB."""
    name = f"amtrace_ui_{uuid.uuid4().hex[:8]}"
    httpx.post(influxdb.url + "/query", params={"q": f'CREATE DATABASE "{name}"'}).raise_for_status()
    return name


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory, influxdb, influx_db):
    """The real server, reading process data from the real InfluxDB."""
    server = UiServer(tmp_path_factory.mktemp("ui-quality"), env={
        "AMTRACE_INFLUX_URL": influxdb.url, "AMTRACE_INFLUX_DATABASE": influx_db}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def built(plant, influxdb, influx_db):
    """A device with 20 s of chamber-oxygen readings written as the edge writes them (tags machine, job, device)."""
    ctx = plant.ready()
    m, job = ctx["machine"]["id"], ctx["job"]["id"]
    code = ctx["job"]["devices"][0]["device_code"]
    plant.gate(ctx)  # released by the release gate, as the agent asks before the start
    # The build window runs from the job's creation to now: spread the readings inside it.
    start = int(datetime.fromisoformat(ctx["job"]["created_at"]).timestamp() * 1e9) + 1_000_000
    step = (time.time_ns() - 1_000_000 - start) // 20
    lines = [f"amtrace_signal_map,machine={m},measurement=lpbf,field=o2_ppm signal=\"chamber_o2\",unit=\"ppm\","
             f"type=\"float\",warn_high=800,alarm_high=1000 {start - 10_000_000_000}"]
    values = [400 + 10 * i for i in range(20)]
    lines += [f"lpbf,machine={m},job={job},device={code} o2_ppm={v} {start + i * step}"
              for i, v in enumerate(values)]
    # An outage of the printer's data between readings 5 and 8, partly lost (as the OPC UA connector records it).
    gap_start, gap_end = start + 5 * step, start + 8 * step
    lines.append(f"amtrace_events,machine={m},job={job},device={code},kind=gap,severity=warning "
                 f"message=\"no data: connection lost; recovery partial\",start_ns={gap_start}i,end_ns={gap_end}i,"
                 f"cause=\"connection lost\",recovery=\"partial\" {gap_end}")
    httpx.post(influxdb.url + "/write", params={"db": influx_db, "precision": "ns"},
               content="\n".join(lines)).raise_for_status()
    return {"ctx": ctx, "code": code, "values": values}


def test_qe_searches_a_device_opens_its_dhr_and_downloads_the_pdf(page, ui_server, plant, built, tmp_path):
    code = built["code"]
    page.goto(ui_server.url + "/ui/quality")
    page.fill("#username", "quality.engineer")
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")
    expect(page.locator("#who")).to_have_text("Quentin Quality (quality engineer)")
    page.fill("#f-device", code)
    page.press("#f-device", "Enter")
    expect(page.locator("#search-message")).to_have_text("1 build record found.")
    row = page.locator(f"#results tr[data-device='{code}']")
    expect(row.locator("td").nth(1)).to_have_text(built["ctx"]["machine"]["id"])
    row.locator("button").click()
    expect(page.locator("#dhr-title")).to_have_text(f"Device history record of {code}")
    signal = page.locator("#signals tr[data-signal='chamber_o2'] td")
    expect(signal).to_have_text(["chamber_o2", "ppm", "20", "400", "590", "495.00", "0"])
    expect(page.locator(".plots svg polyline")).to_have_count(1)
    # Issue 13: the plot has a time axis (HH:MM UTC at start, middle and end) and its min–max envelope.
    times = page.locator(".plots svg text.plot-time").all_text_contents()
    assert len(times) == 3 and times[-1].endswith(" UTC") and all(len(t.split()[0]) == 5 for t in times), times
    expect(page.locator(".plots svg polygon.plot-envelope")).to_have_count(1)
    empty = page.locator("#signals tr.no-data")
    for i in range(empty.count()):  # a signal that sent nothing says so instead of blank cells
        expect(empty.nth(i).locator("td").nth(3)).to_have_text("no data during the build")
    # Not released yet: the summary is read from InfluxDB now, and the page says so.
    expect(page.locator("#pm-source")).to_have_text(
        "Computed live from InfluxDB for this view: provisional until the device is released and sealed.")
    gap = page.locator("#data-gaps tr.gap-lost td")
    expect(gap.nth(3)).to_have_text("partly lost")
    expect(gap.nth(4)).to_have_text("connection lost")
    expect(page.locator("#data-gaps p").first).to_have_text(
        f"{built['ctx']['machine']['id']} during the build: 1 data gap(s), 1 with values lost.")
    screenshot(page, "quality-dhr")

    with page.expect_download() as info:
        page.click("#dl-pdf")
    download = info.value
    assert download.suggested_filename == f"DHR-{code}.pdf"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    assert path.read_bytes().startswith(b"%PDF-")
    expect(page.locator("#dhr-message")).to_have_text(f"Downloaded DHR-{code}.pdf.")
    reads = plant.call("GET", "/audit/entries", "quality_engineer",
                       params={"record_type": "device", "record_id": code, "limit": 1000})
    assert [e["action"] for e in reads if e["action"] == "dhr_read"] == ["dhr_read", "dhr_read"]  # view + PDF


def test_audit_page_verifies_the_chain(page, ui_server, plant, built):
    page.goto(ui_server.url + "/ui/audit")
    page.fill("#username", "quality.engineer")
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")
    expect(page.locator("#entries tr").first).to_be_visible()
    page.click("#verify-form button[type=submit]")
    report = plant.call("GET", "/audit/verify", "quality_engineer")
    result = page.locator("#verify-result [data-verified]")
    expect(result).to_have_attribute("data-verified", "intact")
    assert result.inner_text().startswith("Intact: ") and " record rows checked." in result.inner_text()
    assert report["ok"] is True
    # Issue 13: a literal "null" after the verdict, and a table wider than the window.
    assert "null" not in page.locator("#verify-result").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    screenshot(page, "audit")


def test_a_nonconformity_reaches_the_quality_engineer_as_a_notice_in_the_top_bar(page, ui_server, plant):
    """R16: notify production. The notice stays in the top bar until the quality engineer marks it read."""
    ctx = plant.ready()
    code = ctx["job"]["devices"][0]["device_code"]
    nc = plant.call("POST", "/nonconformities", "operator", 201, json={
        "kind": "surface", "description": "powder residue in the lattice", "device_code": code})
    page.goto(ui_server.url + "/ui/quality")
    page.fill("#username", "quality.engineer")
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")
    notice = page.locator(f"#notices-list li[data-notice]", has_text=f"Nonconformity {nc['id']} (surface)")
    expect(page.locator("#notices-count")).to_contain_text("unread notice")
    page.click("#notices-count")
    expect(notice).to_contain_text(f"on device {code}: powder residue in the lattice")
    screenshot(page, "quality-notices")
    notice.locator("button").click()
    expect(notice).to_have_count(0)
    unread = [n for n in plant.call("GET", "/notifications?unread=true", "quality_engineer")
              if n["record_id"] == str(nc["id"])]
    assert unread == []
    # A notice raised while the page is open arrives by the live stream, without a reload (the page's fallback
    # poll is 5 minutes apart while the stream is up, longer than this check waits).
    later = plant.call("POST", "/nonconformities", "operator", 201, json={
        "kind": "surface", "description": "support remnant on the rim", "device_code": code})
    expect(page.locator("#notices-list li[data-notice]", has_text=f"Nonconformity {later['id']} (surface)")
           ).to_have_count(1, timeout=10_000)


def test_qe_page_lists_every_retained_sample_with_its_place_and_last_step(page, ui_server, plant, built):
    """Issue 19: retained samples on the quality engineer's pages, not only inside one device's record."""
    sample = plant.call("POST", "/samples", "production_manager", 201, json={
        "device_code": built["code"], "location": "Cabinet R2, shelf 3", "condition": "as built, bagged",
        "retain_until": "2040-01-31"})
    plant.call("POST", f"/samples/{sample['id']}/moves", "production_manager",
               json={"to_location": "Cabinet R4, shelf 1", "reason": "cabinet R2 emptied"})
    page.goto(ui_server.url + "/ui/quality")
    page.fill("#username", "quality.engineer")
    page.fill("#secret", PASSWORD)
    page.press("#secret", "Enter")
    row = page.locator(f"#sample-rows tr[data-sample='{sample['id']}'] td")
    expect(row.nth(1)).to_have_text(built["code"])
    expect(row.nth(4)).to_have_text("Cabinet R4, shelf 1")
    expect(row.nth(6)).to_have_text("31 Jan 2040")
    expect(row.nth(7)).to_have_text("stored")
    expect(row.nth(8)).to_contain_text("moved")
    expect(row.nth(8)).to_contain_text("cabinet R2 emptied")
    page.select_option("#f-sample-state", "disposed")
    page.click("#samples-form button[type=submit]")
    expect(page.locator("#samples-message")).to_have_text("0 retained samples.")
    expect(page.locator("#sample-rows tr")).to_have_count(0)
