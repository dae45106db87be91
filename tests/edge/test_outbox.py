"""The durable outbox: order, exact counts, survival of kill -9, back-pressure, quarantine, meta."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from edge.outbox import Outbox, OutboxRow, QuarantineFull
from edge.readings import OutboxFull

ROOT = Path(__file__).resolve().parents[2]


def _block(start: int, n: int) -> tuple[str, int]:
    return "\n".join(f"m,device=DC-{i:06d} v={i}i {1_700_000_000_000_000_000 + i}" for i in range(start, start + n)), n


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.sqlite", budget_bytes=64 * 1024 * 1024)
    yield box
    box.close()


def test_put_take_delete_oldest_first(outbox):
    outbox.put([_block(0, 2), _block(2, 3)])
    outbox.put([_block(5, 1)])
    s = outbox.stats()
    assert (s.rows, s.lines, s.full) == (3, 6, False)

    rows = outbox.take(5)
    assert [r.lines for r in rows] == [2, 3]
    assert rows[0].data.splitlines()[0].startswith("m,device=DC-000000 v=0i")
    # take does not delete: the same rows come again until deleted.
    assert outbox.take(5) == rows
    outbox.delete([r.id for r in rows])
    assert [r.data for r in outbox.take(100)] == [_block(5, 1)[0]]
    s = outbox.stats()
    assert (s.rows, s.lines) == (1, 1)


def test_take_returns_one_row_even_if_larger_than_max_lines(outbox):
    outbox.put([_block(0, 10), _block(10, 1)])
    rows = outbox.take(3)
    assert [r.lines for r in rows] == [10]
    assert outbox.take(0) == rows[:1]
    assert [r.lines for r in outbox.take(11)] == [10, 1]


def test_take_on_empty_outbox(outbox):
    assert outbox.take(100) == []
    assert outbox.wait_for_rows(0.01) is False


@pytest.mark.parametrize("block", [("", 1), ("a 1", 2), ("a f=1 1\n", 1), ("a f=1 1\nb f=1 1", 1), ("a f=1 1", 0)])
def test_put_refuses_blocks_whose_line_count_is_wrong(outbox, block):
    with pytest.raises(ValueError):
        outbox.put([_block(0, 1), block])
    # Nothing of the refused group was stored.
    assert outbox.stats().rows == 0


def test_rows_survive_close_and_reopen(tmp_path):
    path = tmp_path / "o.sqlite"
    with Outbox(path, budget_bytes=10**8) as box:
        box.put([_block(i * 10, 10) for i in range(50)])
        box.delete([r.id for r in box.take(100)])
    with Outbox(path, budget_bytes=10**8) as box:
        s = box.stats()
        assert (s.rows, s.lines) == (40, 400)
        first = box.take(10)[0]
        assert first.data == _block(100, 10)[0]


def test_second_open_of_same_file_is_refused(tmp_path, outbox):
    with pytest.raises(RuntimeError, match="already open"):
        Outbox(tmp_path / "outbox.sqlite", budget_bytes=10**8)


def test_budget_applies_back_pressure_and_releases_after_drain(tmp_path):
    # A tiny budget: a few groups fill it. used_bytes counts database pages in use, so deleting
    # confirmed rows must release the budget at once (freed pages are not counted).
    box = Outbox(tmp_path / "o.sqlite", budget_bytes=96 * 1024)
    try:
        stored = 0
        with pytest.raises(OutboxFull, match="disk budget"):
            for i in range(1000):
                box.put([_block(stored, 50)])
                stored += 50
        s = box.stats()
        assert s.full is True
        assert s.lines == stored  # the refused put wrote nothing
        before = s.rows
        with pytest.raises(OutboxFull):
            box.put([_block(0, 1)])
        assert box.stats().rows == before

        # The quarantine keeps working while the outbox is full.
        qid = box.add_quarantine(source="mqtt", origin="plant/m1", raw=b"{bad json", reason="not JSON")
        assert box.quarantine_entries()[0].id == qid

        while rows := box.take(500):
            box.delete([r.id for r in rows])
        s = box.stats()
        assert (s.rows, s.lines, s.full) == (0, 0, False)
        box.put([_block(0, 50)])
        assert box.stats().lines == 50
    finally:
        box.close()


def test_quarantine_round_trip_and_bound(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", budget_bytes=10**8, quarantine_budget_bytes=4096)
    try:
        a = box.add_quarantine(source="mqtt", origin="plant/m1/data", raw=b"\xff\x00not json", reason="not UTF-8",
                               machine_id="m1")
        b = box.add_quarantine(source="influxdb", origin="http://127.0.0.1:8086", raw=b"m f=\"x\" 1",
                               reason="field type conflict")
        assert box.quarantine_count() == 2
        newest, oldest = box.quarantine_entries()
        assert (newest.id, oldest.id) == (b, a)
        assert oldest.raw == b"\xff\x00not json" and oldest.size == 10
        assert (oldest.source, oldest.origin, oldest.machine_id, oldest.reason) == (
            "mqtt", "plant/m1/data", "m1", "not UTF-8")
        assert oldest.time_ns > 0
        assert [e.id for e in box.quarantine_entries(source="influxdb")] == [b]
        assert [e.id for e in box.quarantine_entries(limit=1, offset=1)] == [a]

        with pytest.raises(QuarantineFull, match="quarantine"):
            box.add_quarantine(source="mqtt", origin="x", raw=b"x" * 5000, reason="too much")
        assert box.quarantine_count() == 2
        assert box.remove_quarantine([a, b]) == 2
        assert box.quarantine_count() == 0
        assert box.stats().quarantine_bytes == 0
        box.add_quarantine(source="mqtt", origin="x", raw=b"x" * 3000, reason="fits again")
    finally:
        box.close()
    with Outbox(tmp_path / "o.sqlite", budget_bytes=10**8, quarantine_budget_bytes=4096) as box:
        assert box.quarantine_count() == 1
        assert box.stats().quarantine_bytes == 3000 + len("fits again") + 1 + 64


def test_meta_is_durable(tmp_path):
    with Outbox(tmp_path / "o.sqlite", budget_bytes=10**8) as box:
        assert box.get_meta("last_event", "none") == "none"
        box.set_meta("last_event", "a")
        box.set_meta("last_event", "b")
    with Outbox(tmp_path / "o.sqlite", budget_bytes=10**8) as box:
        assert box.get_meta("last_event") == "b"


def test_concurrent_producers_and_consumer_lose_and_duplicate_nothing(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", budget_bytes=10**9, fsync=False)
    producers, groups, per_group = 4, 50, 20
    seen: list[str] = []
    done = threading.Event()

    def produce(p: int) -> None:
        for g in range(groups):
            base = (p * groups + g) * per_group
            box.put([_block(base + k, 1) for k in range(per_group)])

    def consume() -> None:
        while True:
            rows = box.take(137)
            if rows:
                seen.extend(line for r in rows for line in r.data.split("\n"))
                box.delete([r.id for r in rows])
            elif done.is_set():
                return
            else:
                box.wait_for_rows(0.05)

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    consumer = threading.Thread(target=consume)
    consumer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    consumer.join()
    total = producers * groups * per_group
    assert len(seen) == total
    assert len(set(seen)) == total
    assert box.stats().rows == 0
    box.close()


def test_large_drain_gives_space_back(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", budget_bytes=10**9, fsync=False)
    line = "m,device=DC-000001 " + ",".join(f"f{i}={i * 1.5}" for i in range(15)) + " 1700000000000000000"
    for _ in range(100):
        box.put([(line, 1)] * 1000)
    full_size = box.stats().file_bytes
    while rows := box.take(5000):
        box.delete([r.id for r in rows])
    box.close()
    # Freed pages were returned in bounded steps; a few MiB may stay free for reuse.
    assert os.path.getsize(tmp_path / "o.sqlite") < full_size / 2


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from edge.outbox import Outbox
    box = Outbox(sys.argv[2], budget_bytes=10**9, fsync=True)
    n = 0
    while True:
        group = []
        for _ in range(25):
            group.append(("m,device=DC-%06d v=%di %d" % (n, n, 1700000000000000000 + n), 1))
            n += 1
        box.put(group)
        print(n, flush=True)
    """
)


def test_survives_kill_9(tmp_path):
    """Every block whose put() returned is there after SIGKILL; no partial group, no duplicate."""
    path = tmp_path / "o.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(ROOT), str(path)], stdout=subprocess.PIPE, text=True
    )
    reported = 0
    try:
        for line in child.stdout:
            reported = int(line)
            if reported >= 2000:
                break
        # The child keeps putting: the kill lands at an arbitrary point, usually mid-transaction.
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert reported >= 2000

    with Outbox(path, budget_bytes=10**9) as box:
        lines = [line for r in box.take(10**9) for line in r.data.split("\n")]
        numbers = [int(line.split(" ")[1][2:-1]) for line in lines]
        assert len(numbers) >= reported
        assert numbers == list(range(len(numbers)))  # nothing lost, nothing twice, in order
        assert len(numbers) % 25 == 0  # whole groups only
        assert box.stats().lines == len(numbers)


def test_closed_outbox_refuses_use(tmp_path):
    box = Outbox(tmp_path / "o.sqlite", budget_bytes=10**8)
    box.close()
    box.close()
    with pytest.raises(RuntimeError, match="closed"):
        box.put([_block(0, 1)])
    assert isinstance(OutboxRow(1, "a f=1 1", 1), OutboxRow)


def test_read_only_view_while_the_agent_holds_the_outbox(tmp_path, outbox):
    """`amtrace-edge quarantine` can look while the agent runs: no lock taken, no change allowed."""
    outbox.put([_block(0, 3)])
    qid = outbox.add_quarantine(source="mqtt", origin="plant/m1", raw=b"{", reason="not JSON")
    view = Outbox(tmp_path / "outbox.sqlite", budget_bytes=10**8, read_only=True)
    try:
        assert [e.id for e in view.quarantine_entries()] == [qid]
        assert (view.stats().lines, view.quarantine_count()) == (3, 1)
        outbox.put([_block(3, 2)])
        assert view.stats().lines == 5  # counts come from the file, not from memory
        for change in (lambda: view.put([_block(9, 1)]), lambda: view.delete([1]),
                       lambda: view.add_quarantine(source="x", origin="y", raw=b"z", reason="r"),
                       lambda: view.set_meta("k", "v")):
            with pytest.raises(RuntimeError, match="read-only"):
                change()
    finally:
        view.close()
    assert outbox.stats().lines == 5
