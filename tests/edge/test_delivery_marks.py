"""What the agent tells the server about its backlog: up to when everything it received is stored."""

from __future__ import annotations

import time

from edge.outbox import Outbox
from edge.serverlink import DeliveryMarks


def test_delivered_until_stays_at_the_last_empty_outbox_while_rows_wait_and_advances_once_they_are_stored(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite", budget_bytes=16 * 1024 * 1024, fsync=False)
    marks = DeliveryMarks(outbox)
    before = time.time_ns()
    first = marks.until()
    assert first >= before, "an empty outbox: everything received is stored"
    outbox.put([("m,machine=a v=1 1", 1)])
    held = [marks.until() for _ in range(3)]  # InfluxDB down: the row waits
    assert held == [first] * 3
    between = time.time_ns()
    outbox.put([("m,machine=a v=2 2", 1)])
    rows = outbox.take(1)
    outbox.delete([r.id for r in rows])  # the first row stored, the second still waits
    partial = marks.until()
    # Up to the last look before the second row came, never beyond what is stored.
    assert first < partial <= between
    outbox.delete([r.id for r in outbox.take(10)])
    caught_up = time.time_ns()
    assert marks.until() >= caught_up
    outbox.close()
