"""The cycle-log folder connector on a real folder: wait for a stable file, store it once, move it to done/,
refuse a bad one into quarantine/ with line and column, keep files upstream while the outbox is full."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "modbus"))
from test_modbus_connector import ListSink, until  # noqa: E402

from edge.config import MachineConfig  # noqa: E402
from edge.connectors.folder.connector import FolderConnector  # noqa: E402
from edge.connectors.folder.simulator import cycle_rows, render  # noqa: E402
from edge.connectors.registry import connector_class  # noqa: E402

ROOT = Path(__file__).resolve().parents[4]


def washer(folder: Path, **conn) -> MachineConfig:
    data = yaml.safe_load((ROOT / "configs" / "machines" / "washer-02.yaml").read_text())
    data["connection"].update({"path": str(folder), "stable_s": 0.3, "poll_interval_s": 0.1, **conn})
    return MachineConfig.model_validate(data)


class QuarantineSink(ListSink):
    def __init__(self):
        super().__init__()
        self.quarantined = []

    def quarantine(self, **kw) -> None:
        self.quarantined.append(kw)


def test_the_registry_finds_the_folder_connector():
    assert connector_class("folder") is FolderConnector


async def test_a_log_is_taken_once_it_holds_still_then_moved_to_done(tmp_path):
    m = washer(tmp_path, stable_s=1.0)
    sink = QuarantineSink()
    conn = FolderConnector(m, sink)
    await conn.start()
    try:
        data = render(m, cycle_rows(time.time_ns() - 60 * 10**9))
        path = tmp_path / "washer-02-0001.csv"
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])  # half a log: the machine is still writing
            f.flush()
            for _ in range(3):  # seen, and seen unchanged for less than stable_s: not taken yet
                await asyncio.sleep(0.3)
                assert sink.ingests == [] and path.exists()
            f.write(data[len(data) // 2:])
        await until(lambda: (tmp_path / "done" / path.name).exists(), 10, "the log in done/")
        rows = cycle_rows(0)
        assert len(sink.ingests) == len(rows) and all(len(i.readings) == 6 for i in sink.ingests)
        assert sink.ingests[0].origin == "washer-02-0001.csv:2"
        digest = hashlib.sha256(data).hexdigest()
        note = json.loads(sink.saved_state(f"folder:washer-02:sha256:{digest}")[f"folder:washer-02:sha256:{digest}"])
        assert note["file"] == path.name and note["samples"] == len(rows)
        stored = [e for e in sink.events if e.kind == "cycle_log_stored"]
        assert len(stored) == 1 and stored[0].fields["samples"] == len(rows)
        assert conn.state.connected and conn.stats.files_stored == 1
    finally:
        await conn.stop()


async def test_a_file_stored_before_a_kill_is_only_moved_after_the_restart(tmp_path):
    """The hash rides in the outbox transaction with the samples: a kill after the store and before the move
    leaves the file in the folder, and the next start moves it without storing it again."""
    m = washer(tmp_path)
    data = render(m, cycle_rows(time.time_ns() - 60 * 10**9))
    (tmp_path / "done").write_text("not a folder: the move fails as if the agent died before it")
    (tmp_path / "log.csv").write_bytes(data)
    sink = QuarantineSink()
    conn = FolderConnector(m, sink)
    await conn.start()
    await until(lambda: conn.stats.files_stored == 1, 10, "the store")
    await asyncio.sleep(0.5)
    await conn.stop()
    assert (tmp_path / "log.csv").exists() and "cannot move log.csv" in conn.state.last_error
    n = len(sink.ingests)
    assert n == len(cycle_rows(0))

    (tmp_path / "done").unlink()
    again = FolderConnector(m, sink)  # a new process: only what the sink kept
    await again.start()
    try:
        await until(lambda: (tmp_path / "done" / "log.csv").exists(), 10, "the move after the restart")
        assert len(sink.ingests) == n and again.stats.files_stored == 0
    finally:
        await again.stop()


async def test_a_bad_log_goes_to_quarantine_with_line_and_column_and_the_next_one_is_taken(tmp_path):
    m = washer(tmp_path)
    sink = QuarantineSink()
    conn = FolderConnector(m, sink)
    await conn.start()
    try:
        good = render(m, cycle_rows(time.time_ns() - 60 * 10**9)).decode("cp1252").splitlines(keepends=True)
        bad = good[:5] + [good[5].replace(";", ";x", 3)] + good[6:]
        (tmp_path / "a-bad.csv").write_bytes("".join(bad).encode("cp1252"))
        (tmp_path / "b-good.csv").write_bytes("".join(good).encode("cp1252"))
        await until(lambda: (tmp_path / "done" / "b-good.csv").exists(), 10, "the good log in done/")
        assert (tmp_path / "quarantine" / "a-bad.csv").exists()
        (q,) = sink.quarantined
        assert q["source"] == "folder" and q["machine_id"] == "washer-02"
        assert "line 6, column 'Temperatur Kammer [°C]'" in q["reason"]
        refused = [e for e in sink.events if e.kind == "cycle_log_refused"]
        assert len(refused) == 1 and refused[0].severity == "alarm" and "line 6" in refused[0].message
        assert len(sink.ingests) == len(good) - 1  # only the good file's samples
    finally:
        await conn.stop()


async def test_while_the_outbox_is_full_the_log_waits_in_the_folder(tmp_path):
    m = washer(tmp_path)
    sink = QuarantineSink()
    sink.full = True
    conn = FolderConnector(m, sink)
    await conn.start()
    try:
        (tmp_path / "log.csv").write_bytes(render(m, cycle_rows(time.time_ns() - 60 * 10**9)))
        await until(lambda: "backpressure" in sink.kinds(), 10, "back-pressure")
        await asyncio.sleep(0.5)
        assert (tmp_path / "log.csv").exists() and sink.ingests == []
        assert sink.kinds().count("backpressure") == 1
        sink.full = False
        await until(lambda: (tmp_path / "done" / "log.csv").exists(), 10, "the log stored once the outbox drains")
        assert "backpressure_cleared" in sink.kinds() and len(sink.ingests) == len(cycle_rows(0))
    finally:
        await conn.stop()


async def test_an_unreadable_share_is_a_lost_connection_until_it_returns(tmp_path):
    share = tmp_path / "share"
    m = washer(share)
    sink = QuarantineSink()
    conn = FolderConnector(m, sink)
    await conn.start()
    try:
        await until(lambda: "connection_lost" in sink.kinds(), 10, "connection_lost")
        assert not conn.state.connected and str(share) in conn.state.last_error
        share.mkdir()
        await until(lambda: "connection_restored" in sink.kinds(), 10, "connection_restored")
        assert conn.state.connected
    finally:
        await conn.stop()
