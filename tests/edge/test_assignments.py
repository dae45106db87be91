"""The local job assignment: which devices a reading belongs to, at the reading's own time."""

import pytest

from edge.assignments import AssignmentBook, AssignmentRequest


def test_reading_time_picks_the_job_that_ran_then(tmp_path):
    book = AssignmentBook(tmp_path / "a.sqlite")
    book.assign("lpbf-01", AssignmentRequest(job="J1", devices=["D1", "D2"], start_ns=1_000))
    book.assign("lpbf-01", AssignmentRequest(job="J2", devices=["D3"], start_ns=2_000))
    book.release("lpbf-01", end_ns=3_000)

    assert book.active_at("lpbf-01", 999) is None
    assert book.active_at("lpbf-01", 1_000).devices == ("D1", "D2")
    assert book.active_at("lpbf-01", 1_999).job == "J1"
    assert book.active_at("lpbf-01", 2_000).job == "J2"
    assert book.active_at("lpbf-01", 3_000) is None
    assert book.active_at("other", 1_500) is None


def test_assignments_survive_a_restart_and_stay_append_only(tmp_path):
    path = tmp_path / "a.sqlite"
    book = AssignmentBook(path)
    book.assign("m1", AssignmentRequest(job="J1", devices=["D1", "D1", "D2"], start_ns=10))
    book.assign("m1", AssignmentRequest(job="J2", devices=["D9"], start_ns=20))
    book.close()

    again = AssignmentBook(path)
    hist = again.history("m1")
    assert [(a.job, a.devices, a.start_ns, a.end_ns) for a in hist] == [
        ("J1", ("D1", "D2"), 10, 20),
        ("J2", ("D9",), 20, None),
    ]
    assert again.current("m1").job == "J2"


def test_an_assignment_cannot_start_before_the_current_one(tmp_path):
    book = AssignmentBook(tmp_path / "a.sqlite")
    book.assign("m1", AssignmentRequest(job="J1", devices=["D1"], start_ns=100))
    with pytest.raises(ValueError, match="would start before the current job J1"):
        book.assign("m1", AssignmentRequest(job="J2", devices=["D2"], start_ns=50))


def test_request_refuses_empty_devices_and_odd_job_ids():
    with pytest.raises(ValueError):
        AssignmentRequest(job="J1", devices=[])
    with pytest.raises(ValueError):
        AssignmentRequest(job="J 1; drop", devices=["D1"])


def _context(**fields):
    """A context as the server sends it (edge/contract.py), with what the test does not care about empty."""
    from edge.contract import AgentContext

    return AgentContext.model_validate({"machine_id": "s-1", "job_state": None, "approvals": None, **fields})


def test_a_server_cycle_that_started_before_the_last_job_ended_is_booked_once_and_is_current(tmp_path):
    """Issue 12 item 8: the server's cycle began before the previous assignment ended. The book took a row
    before the ended job, which therefore never became current, so every context poll appended it again
    (3 rows in 4 s) and the agent reported no current job. Now it starts where the last one ended, once."""
    from edge.serverlink import apply_server_job

    book = AssignmentBook(tmp_path / "a.sqlite")
    book.assign("sterilizer-01", AssignmentRequest(job="cycle-1", devices=["D1"], start_ns=1_000, source="server"))
    book.release("sterilizer-01", end_ns=5_000)
    with pytest.raises(ValueError, match="before job cycle-1 ended"):
        book.assign("sterilizer-01", AssignmentRequest(job="cycle-2", devices=["D2"], start_ns=4_000))
    ctx = _context(job_id="cycle-2", device_codes=["D2"], started_ns=4_000)
    for _ in range(3):  # three polls of the same context
        apply_server_job(book, "sterilizer-01", ctx)
    assert [(a.job, a.start_ns, a.end_ns) for a in book.history("sterilizer-01")] == [
        ("cycle-1", 1_000, 5_000), ("cycle-2", 5_000, None)]
    assert book.current("sterilizer-01").job == "cycle-2"


def test_a_server_cycle_is_released_at_its_recorded_end_not_when_the_agent_noticed(tmp_path):
    from edge.serverlink import apply_server_job

    book = AssignmentBook(tmp_path / "a.sqlite")
    apply_server_job(book, "s-1", _context(job_id="cycle-4", device_codes=["D1"], started_ns=1_000))
    apply_server_job(book, "s-1", _context(job_id=None, device_codes=[], recent_cycles=[
        {"job_id": "cycle-4", "device_codes": ["D1"], "start_ns": 1_000, "end_ns": 9_000}]))
    assert [(a.job, a.start_ns, a.end_ns) for a in book.history("s-1")] == [("cycle-4", 1_000, 9_000)]
    assert book.active_at("s-1", 8_999).job == "cycle-4" and book.active_at("s-1", 9_000) is None
